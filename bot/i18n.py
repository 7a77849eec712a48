"""Message catalogs (bot/messages/*.toml): every word a user reads, Chinese first.

Catalog entries are trusted HTML with `{name}` placeholders; the values filled in are escaped,
because prompts carry `<lora:...>` and users type anything. A value that is itself a catalog
text (`Html`, what `t` returns) is HTML already and goes in as it is. A TOML table
(`[refusal]`) gives dotted keys (`refusal.lora_missing`).
"""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

DEFAULT_LANGUAGE = "zh"
LANGUAGES = ("zh", "en")
MAX_MESSAGE_CHARS = 4096  # Telegram's limit for one text message
MAX_CAPTION_CHARS = 1024  # Telegram's limit for a photo or document caption
MESSAGES_DIR = Path(__file__).parent / "messages"
_TAG = re.compile(r"<[^>]+>")
_MARKUP = re.compile(r"<(/?)([a-z-]+)[^>]*>")  # a tag of the catalogs' HTML
_ATOM = re.compile(r"<[^<>]*>|&#?\w+;|.", re.S)  # a tag, an entity, or one character


class Html(str):
    """Text that is HTML already (a catalog text with its values escaped)."""


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@cache
def catalog(language: str) -> dict[str, str]:
    with open(MESSAGES_DIR / f"{language}.toml", "rb") as file:
        return _flatten(tomllib.load(file))


def pick_language(stored: str | None, client_code: str | None) -> str:
    """The user's /lang choice, else English for English clients, else Chinese."""
    if stored in LANGUAGES:
        return stored
    if client_code and client_code.lower().startswith("en"):
        return "en"
    return DEFAULT_LANGUAGE


def escaped(value: object) -> str:
    return value if isinstance(value, Html) else html.escape(str(value))


def t(language: str, key: str, **values: object) -> Html:
    """The `key` message in `language` with escaped values filled in."""
    template = catalog(language).get(key) or catalog(DEFAULT_LANGUAGE)[key]
    return Html(template.format(**{name: escaped(value) for name, value in values.items()}))


def lines(texts: Iterable[str]) -> Html:
    """Catalog texts (or plain ones, escaped) one per line."""
    return Html("\n".join(escaped(text) for text in texts))


def plain(text: str) -> str:
    """What a reader sees of an HTML text: tags dropped, entities decoded."""
    return html.unescape(_TAG.sub("", text))


def split_text(text: str, limit: int = MAX_MESSAGE_CHARS) -> list[str]:
    """Split HTML at line breaks into pieces Telegram accepts, counting what a reader sees (as
    Telegram does: tags count nothing, an entity one character, in UTF-16 units); a longer line
    is cut between characters, never inside a tag or an entity. A tag open across a split (a
    long <pre>) is closed at the end of one piece and opened again at the start of the next."""
    return _balanced(_split_lines(text, limit))


def _balanced(pieces: list[str]) -> list[str]:
    balanced, carried = [], ""
    for piece in pieces:
        text, open_tags = carried + piece, []
        for tag in _MARKUP.finditer(text):
            if not tag.group(1):
                open_tags.append((tag.group(2), tag.group(0)))
            elif open_tags and open_tags[-1][0] == tag.group(2):
                open_tags.pop()
        balanced.append(text + "".join(f"</{name}>" for name, _ in reversed(open_tags)))
        carried = "".join(opening for _, opening in open_tags)
    return balanced


def _shown_length(atom: str) -> int:
    """Telegram's length of one atom of HTML: a tag 0, an entity its character, in UTF-16."""
    if atom.startswith("<"):
        return 0
    shown = html.unescape(atom) if atom.startswith("&") else atom
    return len(shown.encode("utf-16-le")) // 2


def _cut_line(line: str, limit: int) -> list[str]:
    """A line in parts of at most `limit` shown characters, cut between atoms."""
    parts, current, length = [], "", 0
    for atom in _ATOM.findall(line):
        size = _shown_length(atom)
        if length + size > limit and length:
            parts.append(current)
            current, length = "", 0
        current += atom
        length += size
    return [*parts, current]


def _split_lines(text: str, limit: int) -> list[str]:
    pieces: list[str] = []
    current, length = "", -1  # -1: no line yet (the first line adds no line break)
    for line in text.split("\n"):
        for part in _cut_line(line, limit):
            size = sum(_shown_length(atom) for atom in _ATOM.findall(part))
            if length >= 0 and length + 1 + size > limit:
                pieces.append(current)
                current, length = "", -1
            current = f"{current}\n{part}" if length >= 0 else part
            length += size + 1
    pieces.append(current)
    # A piece a reader would see as blank (Telegram refuses it) goes in front of the next one.
    kept: list[str] = []
    for piece in pieces:
        if kept and not plain(kept[-1]).strip():
            kept[-1] += piece
        else:
            kept.append(piece)
    return kept


def shorten(text: str, limit: int = MAX_CAPTION_CHARS) -> str:
    """`text` (HTML) within `limit` characters; a longer one loses its markup (a cut could
    split a tag) and ends with an ellipsis."""
    if len(text) <= limit:
        return text
    seen = plain(text)
    cut = seen if len(seen) <= limit else seen[: limit - 1] + "…"
    # Escaping lengthens the text again: cut until the escaped form fits.
    while len(html.escape(cut, quote=False)) > limit:
        cut = cut[:-2] + "…"
    return html.escape(cut, quote=False)
