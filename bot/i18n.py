"""Message catalogs (bot/messages/*.toml): every word a user reads, Chinese first.

Catalog entries are trusted HTML with `{name}` placeholders; the values filled in are escaped,
because prompts carry `<lora:...>` and users type anything.
"""

from __future__ import annotations

import html
import tomllib
from functools import cache
from pathlib import Path

DEFAULT_LANGUAGE = "zh"
LANGUAGES = ("zh", "en")
MAX_MESSAGE_CHARS = 4096  # Telegram's limit for one text message
MAX_CAPTION_CHARS = 1024  # Telegram's limit for a photo or document caption
MESSAGES_DIR = Path(__file__).parent / "messages"


@cache
def catalog(language: str) -> dict[str, str]:
    with open(MESSAGES_DIR / f"{language}.toml", "rb") as file:
        return tomllib.load(file)


def pick_language(stored: str | None, client_code: str | None) -> str:
    """The user's /lang choice, else English for English clients, else Chinese."""
    if stored in LANGUAGES:
        return stored
    if client_code and client_code.lower().startswith("en"):
        return "en"
    return DEFAULT_LANGUAGE


def t(language: str, key: str, **values: object) -> str:
    """The `key` message in `language` with escaped values filled in."""
    template = catalog(language).get(key) or catalog(DEFAULT_LANGUAGE)[key]
    return template.format(**{name: html.escape(str(value)) for name, value in values.items()})


def split_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Split at line breaks into pieces Telegram accepts; a longer line is cut hard."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            pieces.append(current)
            candidate = line
        current = candidate
    return [*pieces, current] if current or not pieces else pieces


def shorten(text: str, limit: int = MAX_CAPTION_CHARS) -> str:
    """Cut `text` to `limit` characters with an ellipsis (for captions)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
