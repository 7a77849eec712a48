"""Pull the non-picture parts out of a chat request: options, poster text, size, count, seed.

Each `extract_*` function is pure: it returns what it found and the request with those words
replaced by a comma, so the words around them do not run together and the glossary never sees
them ("标题「圣诞快乐」" is poster text, not a festival to draw).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from prompts.lexicon import Glossary
from prompts.spec import check_sampler

# One or two lines at poster size; longer text belongs in the message, not on the image.
MAX_TITLE_CHARS = 40
MAX_SUBTITLE_CHARS = 80

QUOTES = {"「": "」", "『": "』", "“": "”", '"': '"', "《": "》", "【": "】"}
_OPENING = re.escape("".join(QUOTES))
_QUOTED = "|".join(f"{re.escape(o)}([^{re.escape(c)}]*){re.escape(c)}" for o, c in QUOTES.items())
# 副标题 before 标题 so the longer keyword wins; unquoted text runs to the next punctuation.
_TITLE_KEYWORD = re.compile(
    rf"(副标题|小标题|标题|文案|subtitle|title|slogan)(?:\s*[:：=是为]\s*|\s+|(?=[{_OPENING}]))"
    rf"(?:{_QUOTED}|([^，,。；;！!？?\n]+))",
    re.I,
)
_BARE_QUOTE = re.compile(_QUOTED)
_OPTIONS_START = re.compile(r"(?:^|\s)--[a-z]", re.I)
_SIZE = re.compile(r"(?<!\d)(\d{2,5})\s*[x×*]\s*(\d{2,5})(?!\d)", re.I)
_CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_CN_DIGITS |= {"六": 6, "七": 7, "八": 8, "九": 9}
_EN_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_COUNTS = (
    re.compile(r"(\d{1,3}|[一二两三四五六七八九十]{1,3})\s*(?:张|幅|个版本|版本|款|份)"),
    re.compile(r"(?<![a-z0-9])[x×]\s*(\d{1,3})(?!\d)", re.I),
    re.compile(
        rf"(?<![a-z0-9])(\d{{1,3}}|{'|'.join(_EN_NUMBERS)})\s+"
        r"(?:images?|pictures?|pics?|posters?|versions?|variations?|variants?|options?)\b",
        re.I,
    ),
)
_SEED = re.compile(r"(?:种子|seed)\s*(?:[:：=]|号)?\s*(-?\d+)", re.I)


@dataclass(frozen=True)
class Options:
    """`--name value` options a WebUI-savvy user appended; None = not given."""

    steps: int | None = None
    seed: int | None = None
    sampler: str | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int | None = None
    n_iter: int | None = None
    negative_prompt: str | None = None
    hires: bool | None = None
    preset: str | None = None
    ip: str | None = None


# option spelling -> (Options field, converter); flags have no value.
_OPTION_VALUES = {
    "steps": ("steps", int),
    "seed": ("seed", int),
    "sampler": ("sampler", str),
    "cfg": ("cfg_scale", float),
    "cfg-scale": ("cfg_scale", float),
    "width": ("width", int),
    "height": ("height", int),
    "size": ("size", str),
    "batch": ("batch_size", int),
    "batch-size": ("batch_size", int),
    "n-iter": ("n_iter", int),
    "neg": ("negative_prompt", str),
    "negative": ("negative_prompt", str),
    "preset": ("preset", str),
    "ip": ("ip", str),
}
_OPTION_FLAGS = {"hires": True, "no-hires": False}


def _replace(text: str, match: re.Match) -> str:
    return text[: match.start()] + "，" + text[match.end() :]


def split_options(text: str) -> tuple[str, Options]:
    """Split `... --steps 30 --sampler "DPM++ 2M Karras"` into the text and its options.

    Raises ValueError naming the option when it is unknown or its value is not valid.
    """
    start = _OPTIONS_START.search(text)
    if not start:
        return text, Options()
    try:
        words = shlex.split(text[start.start() :])
    except ValueError as exc:
        raise ValueError(f"options: {exc} (put quotes around values with spaces)") from None
    values: dict = {}
    i = 0
    while i < len(words):
        word = words[i]
        name, _, inline_value = word.removeprefix("--").partition("=")
        name = name.lower().replace("_", "-")
        if not word.startswith("--") or (name not in _OPTION_VALUES and name not in _OPTION_FLAGS):
            known = ", ".join(f"--{n}" for n in [*_OPTION_VALUES, *_OPTION_FLAGS])
            raise ValueError(f"{word}: unknown option; known options: {known}")
        if name in _OPTION_FLAGS:
            values["hires"] = _OPTION_FLAGS[name]
            i += 1
            continue
        if not inline_value:
            if i + 1 >= len(words):
                raise ValueError(f"--{name}: needs a value")
            inline_value = words[i + 1]
            i += 1
        field_name, convert = _OPTION_VALUES[name]
        try:
            values[field_name] = convert(inline_value)
        except ValueError:
            raise ValueError(
                f"--{name}: {inline_value!r} is not a valid {convert.__name__}"
            ) from None
        i += 1
    if "size" in values:
        match = _SIZE.fullmatch(values.pop("size").strip())
        if not match:
            raise ValueError("--size: must be WIDTHxHEIGHT, e.g. 512x768")
        values["width"], values["height"] = int(match.group(1)), int(match.group(2))
    if "sampler" in values:
        values["sampler"] = check_sampler(values["sampler"], "--sampler")
    return text[: start.start()].strip(), Options(**values)


def extract_titles(text: str) -> tuple[str, str, str, list[str]]:
    """Find the poster's title and subtitle; return (title, subtitle, text, notes).

    After 标题/title and a colon, 是, a space or a quote, the text (quoted, or up to the next
    punctuation) is the title; after
    副标题/subtitle the subtitle; after 文案/slogan the title if there is none yet, else the
    subtitle. Otherwise the first quoted text is the title and the second the subtitle.
    """
    found: dict[str, str] = {}
    notes: list[str] = []

    def place(kind: str, value: str) -> None:
        value = value.strip()
        if not value:
            return
        if kind not in found:
            found[kind] = value
        elif kind == "title" and "subtitle" not in found:
            found["subtitle"] = value
        else:
            notes.append(f"ignored extra poster text {value!r}")

    while match := _TITLE_KEYWORD.search(text):
        keyword = match.group(1).lower()
        value = next(group for group in match.groups()[1:] if group is not None)
        kind = "subtitle" if keyword in ("副标题", "小标题", "subtitle") else "title"
        place(kind, value)
        text = _replace(text, match)
    while match := _BARE_QUOTE.search(text):
        place("title", next(group for group in match.groups() if group is not None))
        text = _replace(text, match)

    title, subtitle = found.get("title", ""), found.get("subtitle", "")
    if len(title) > MAX_TITLE_CHARS:
        raise ValueError(f"title: {len(title)} characters, the poster fits {MAX_TITLE_CHARS}")
    if len(subtitle) > MAX_SUBTITLE_CHARS:
        raise ValueError(
            f"subtitle: {len(subtitle)} characters, the poster fits {MAX_SUBTITLE_CHARS}"
        )
    return title, subtitle, text, notes


def _words_pattern(words: list[str]) -> re.Pattern | None:
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])", re.I)


def extract_size(text: str, glossary: Glossary) -> tuple[tuple[int, int] | None, str | None, str]:
    """Find an explicit size (1080x1920 or a named one like 手机壁纸) and an orientation word.

    Returns ((width, height) or None, orientation or None, text).
    """
    size = None
    if match := _SIZE.search(text):
        size = int(match.group(1)), int(match.group(2))
        text = _replace(text, match)
    named = _words_pattern(list(glossary.sizes))
    if named and (match := named.search(text)):
        size = size or glossary.sizes[match.group(0).lower()]
        text = _replace(text, match)
    orientation = None
    words = _words_pattern(list(glossary.orientations))
    while words and (match := words.search(text)):
        orientation = orientation or glossary.orientations[match.group(0).lower()]
        text = _replace(text, match)
    return size, orientation, text


def extract_hires(text: str, glossary: Glossary) -> tuple[bool, str]:
    """Whether the request asks for hires fix (高清, hires ...)."""
    words = _words_pattern(list(glossary.hires_words))
    asked = False
    while words and (match := words.search(text)):
        asked = True
        text = _replace(text, match)
    return asked, text


def chinese_number(text: str) -> int:
    """'4' -> 4, '两' -> 2, '十二' -> 12, 'four' -> 4."""
    if text.isdigit():
        return int(text)
    if text.lower() in _EN_NUMBERS:
        return _EN_NUMBERS.index(text.lower()) + 1
    tens, _, ones = text.partition("十")
    if "十" in text:
        return (_CN_DIGITS[tens] if tens else 1) * 10 + (_CN_DIGITS[ones] if ones else 0)
    return _CN_DIGITS[text]


def extract_count(text: str) -> tuple[int | None, str]:
    """How many images: 来4张, 两张, x4, 4 images."""
    for pattern in _COUNTS:
        if match := pattern.search(text):
            return chinese_number(match.group(1)), _replace(text, match)
    return None, text


def extract_seed(text: str) -> tuple[int | None, str]:
    """A seed written in words: 种子123, seed: 42."""
    if match := _SEED.search(text):
        return int(match.group(1)), _replace(text, match)
    return None, text
