"""A WebUI prompt pasted with chat options: `(summer beach:1.2) <lora:x:0.8> 竖版 来4张`.

The prompt part passes through as typed (weights, BREAKs and `<lora:…>` tags intact); the
options said in words around it (sizes, orientation, hires, count, seed) apply as in a chat
request, and an IP's Chinese name becomes its trigger word. Neither ever edits inside a
`<…>` tag or a bracketed group: `<lora:dada_v3:1>` holds no 3:1 ratio and no IP name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from posterbot.config import Config
from prompts.lexicon import Glossary
from prompts.request import extract_count, extract_hires, extract_seed, extract_size
from prompts.spec import Target
from prompts.syntax import has_trigger

_CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")
_WEBUI = re.compile(r"<lora:[^<>]*>|\([^()]*:\s*[+-]?[.\d]+\s*\)", re.I)
_OPEN = {"(": ")", "[": "]", "<": ">"}


@dataclass
class Pasted:
    """The prompt as it goes to the engine, and the options read from the words around it."""

    prompt: str
    targets: list[Target] = field(default_factory=list)
    orientation: str | None = None
    hires: bool = False
    count: int | None = None
    seed: int | None = None
    options: list[str] = field(default_factory=list)  # the option words, for the note


def protected_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each `<…>` tag and each outermost `(…)` / `[…]` group (nested brackets
    inside); an unclosed bracket protects the rest of the text, as WebUI applies it."""
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char not in _OPEN or (i > 0 and text[i - 1] == "\\"):
            i += 1
            continue
        depth, j = 0, i
        while j < len(text):
            if text[j] == char and (j == 0 or text[j - 1] != "\\"):
                depth += 1
            elif text[j] == _OPEN[char] and text[j - 1] != "\\":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        spans.append((i, min(j + 1, len(text))))
        i = j + 1
    return spans


def _pieces(text: str) -> list[tuple[str, bool]]:
    """`text` as (piece, protected) in order."""
    pieces: list[tuple[str, bool]] = []
    done = 0
    for start, end in protected_spans(text):
        pieces += [(text[done:start], False), (text[start:end], True)]
        done = end
    pieces.append((text[done:], False))
    return [(piece, protected) for piece, protected in pieces if piece]


def _ip_names_to_triggers(text: str, config: Config) -> str:
    """An IP's Chinese name (达达) as its trigger word, or dropped when the prompt has it."""
    names = sorted(
        ((name, ip) for ip in config.ips for name in {ip.name, *ip.aliases} if _CJK.search(name)),
        key=lambda pair: len(pair[0]),
        reverse=True,
    )
    for name, ip in names:
        if name in text:
            has = has_trigger(text, ip.trigger)
            text = text.replace(name, "" if has else ip.trigger, 1).replace(name, "")
    return text


def _tidy(text: str) -> str:
    """The prompt without the commas and spaces the removed option words left."""
    text = re.sub(r"\s*，\s*", ", ", text)
    text = re.sub(r"(?:,\s*){2,}", ", ", text)
    return text.strip(" ,\n")


def read_pasted(text: str, config: Config, glossary: Glossary, most: int) -> Pasted | None:
    """A pasted WebUI prompt with Chinese options, or None when `text` is a chat request
    (no `<lora:…>` or `(word:1.2)`, or Chinese left once the options are read)."""
    if not _CJK.search(text) or not _WEBUI.search(text):
        return None
    found = Pasted("")
    kept: list[str] = []
    for piece, protected in _pieces(text):
        if protected:
            kept.append(piece)
            continue
        before = piece
        targets, orientation, piece = extract_size(piece, glossary)
        found.targets += [t for t in targets if t not in found.targets]
        found.orientation = found.orientation or orientation
        hires, piece = extract_hires(piece, glossary)
        found.hires = found.hires or hires
        count, piece, _ = extract_count(piece, most)
        found.count = found.count or count
        seed, piece = extract_seed(piece)
        found.seed = found.seed if seed is None else seed
        if piece != before:
            words = re.split(r"[\s，,]+", before)
            found.options += [w for w in words if _CJK.search(w) and w not in piece]
        kept.append(_ip_names_to_triggers(piece, config))
    found.prompt = _tidy("".join(kept))
    unprotected = "".join(piece for piece, protected in _pieces(found.prompt) if not protected)
    words = [t for t in glossary.tokenize(unprotected) if _CJK.search(t.text)]
    if any(token.kind not in ("ignore", "break") for token in words):
        return None  # Chinese words to translate: a chat request after all
    for token in words:  # 来, 帮我 ... around the options
        found.prompt = found.prompt.replace(token.text, "", 1)
    found.prompt = _tidy(found.prompt)
    return found
