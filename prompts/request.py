"""Pull the non-picture parts out of a chat request: options, poster text, size, count, seed.

Each `extract_*` function is pure: it returns what it found and the request with those words
replaced by a comma, so the words around them do not run together and the glossary never sees
them ("标题「圣诞快乐」" is poster text, not a festival to draw).
"""

from __future__ import annotations

import re
import shlex
import typing
from dataclasses import dataclass, field
from typing import Any

from posterbot.config import GenerationSettings, check_copy_length
from posterbot.errors import Refusal
from prompts.dictionary import Dictionary
from prompts.lexicon import Glossary
from prompts.notes import Note
from prompts.sizes import ratio_target
from prompts.spec import Target, check_sampler

# One or two lines at poster size; longer text belongs in the message, not on the image.
# A ratio typed on its own must be one of these, so a time (9:30) is not read as a size; after
# 比例/ratio any W:H is. 1:1 is left to the orientation words (square, no finished size).
COMMON_RATIOS = {(2, 3), (3, 2), (3, 4), (4, 3), (4, 5), (5, 4), (9, 16), (16, 9), (21, 9)}
COMMON_RATIOS |= {(1, 2), (2, 1), (1, 3), (3, 1), (1, 4), (4, 1)}

QUOTES = {"「": "」", "『": "』", "“": "”", '"': '"', "《": "》", "【": "】"}
_OPENING = re.escape("".join(QUOTES))
_QUOTED = "|".join(f"{re.escape(o)}([^{re.escape(c)}]*){re.escape(c)}" for o, c in QUOTES.items())
# 副标题 before 标题 (按钮文字 before 按钮) so the longer keyword wins. Unquoted text runs to the
# next punctuation, or a space that is not between two English words (标题是X 副标题是Y 达达挥手),
# or the next keyword; a date may follow its keyword directly (活动时间12月1日).
_SUBTITLE_KEYWORDS = ("副标题", "小标题", "subtitle")
_CTA_KEYWORDS = ("行动号召", "按钮文字", "按钮", "活动时间", "日期", "cta")
_KEYWORDS = rf"{'|'.join(_SUBTITLE_KEYWORDS + _CTA_KEYWORDS)}|标题|文案|title|slogan"
_TITLE_KEYWORD = re.compile(
    rf"({_KEYWORDS})"
    rf"(?:\s*[:：=是为]\s*|\s+|(?=[{_OPENING}\d]))"
    rf"(?:{_QUOTED}|([^，,。；;！!？?\n]+))",
    re.I,
)
_UNQUOTED = 2 + len(QUOTES)  # the group of unquoted copy: after the keyword and each quote pair
_KEYWORD_AHEAD = re.compile(rf"(?:{_KEYWORDS})(?:\s*[:：=是为]|\s|[{_OPENING}]|$)", re.I)
# A call to action or a date line said without a keyword: 立即下单, shop now, 12月1日-12月12日.
_CTA_PHRASE = re.compile(
    r"(?:立即|马上|现在|赶紧|赶快|快来|扫码|点击|一键)"
    r"(?:下单|购买|抢购|领取|领券|报名|预约|关注|参与|体验|订购|注册|咨询|下载|抢)"
    r"|(?<![a-z])(?:order|shop|buy|book|sign up|join|register|download) now(?![a-z])",
    re.I,
)
_DATE = r"(?:\d{4}年)?\d{1,2}月\d{1,2}[日号]"
_DATE_LINE = re.compile(
    rf"(?<!\d){_DATE}(?:\s*[-~～—–至到]\s*(?:(?:\d{{4}}年)?\d{{1,2}}月)?\d{{1,2}}[日号])?"
)
_BARE_QUOTE = re.compile(_QUOTED)
_OPTIONS_START = re.compile(r"(?:^|\s)--[a-z]", re.I)
_SIZE = re.compile(r"(?<!\d)(\d{2,5})\s*[x×*]\s*(\d{2,5})(?!\d)", re.I)
# In running text: 1080x1920 (a print size may add @300), or a ratio: 比例 3:4, or 3:4 standing
# alone (no digit or colon around it, so 9:30:00 and 1.5:1 are not read as ratios).
_SIZE_IN_TEXT = re.compile(
    r"(?<![\d.])(?P<physical>(?P<physical_width>\d{1,4}(?:\.\d)?)\s*[x×*]\s*"
    r"(?P<physical_height>\d{1,4}(?:\.\d)?)\s*(?P<unit>cm|厘米|公分|mm|毫米))"
    r"|(?<![\d.])(?P<pixels>[1-9]\d{1,4}\s*[x×*]\s*[1-9]\d{1,4}"
    r"(?:\s*@\s*[1-9]\d{1,3}\s*(?:dpi)?)?)(?!\d)"
    r"|(?:(?P<keyword>比例|宽高比|ratio)\s*[:：=]?\s*|(?<![\d:：.]))"
    r"(?P<ratio_width>[1-9]\d?)\s*(?P<separator>[:：]|比)\s*(?P<ratio_height>[1-9]\d?)"
    r"(?![\d:：.])",
    re.I,
)
MM_PER_UNIT = {"cm": 10, "厘米": 10, "公分": 10, "mm": 1, "毫米": 1}
MM_PER_INCH = 25.4
_CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_CN_DIGITS |= {"六": 6, "七": 7, "八": 8, "九": 9}
_EN_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
# A count is a number, or a range of two (3-5张, 三到五张, and 两三张 / 三五张 said as one word).
_NUMBER = r"\d{1,3}|[零一二两三四五六七八九十]{1,3}"
_COUNTS = (
    re.compile(
        rf"(?<!\d)(?:({_NUMBER})\s*(?:-|~|～|—|–|到|至)\s*)?({_NUMBER})\s*(?:张|幅|个版本|版本|款|份)"
    ),
    re.compile(r"(?<![a-z0-9])[x×]\s*(\d{1,3})(?!\d)", re.I),
    re.compile(
        rf"(?<![a-z0-9])(\d{{1,3}}|{'|'.join(_EN_NUMBERS)})\s+"
        r"(?:images?|pictures?|pics?|posters?|versions?|variations?|variants?|options?)\b",
        re.I,
    ),
)
# "A few more" (多来几张, 几张) is no number: the chat's default count, said without a note.
_SOME = re.compile(r"(?:多[来出画做弄]?|再[来画]?|来|画)?几[张幅款个份]")
# What follows a count and only says "that is enough" (一张就好, 两张就行).
_ENOUGH = re.compile(r"\s*(?:就好|就行|就够了?|即可|就可以了?)")
_SEED = re.compile(r"(?:种子|seed)\s*(?:[:：=]|号)?\s*(-?\d+)", re.I)


@dataclass(frozen=True)
class Options:
    """`--name value` options a WebUI-savvy user appended."""

    settings: dict[str, Any] = field(default_factory=dict)  # GenerationSettings fields
    preset: str | None = None
    ip: str | None = None


# Every generation setting is an option under its WebUI name (`--cfg-scale`, `--hr-scale`);
# these are the short spellings people also type. A true/false setting is a flag.
_SETTING_ALIASES = {
    "sampler": "sampler_name",
    "cfg": "cfg_scale",
    "batch": "batch_size",
    "neg": "negative_prompt",
    "negative": "negative_prompt",
    "hires": "enable_hr",
}
_SETTING_TYPES = typing.get_type_hints(GenerationSettings)
_NEGATED_FLAGS = {"no-hires": "enable_hr"}
_OTHER_OPTIONS = ("size", "preset", "ip")


def _replace(text: str, match: re.Match) -> str:
    return text[: match.start()] + "，" + text[match.end() :]


def _option_name(word: str) -> str:
    """`--CFG_Scale=7` -> `cfg_scale`, `--cfg` -> `cfg_scale`; ValueError for an unknown one."""
    name = word.removeprefix("--").partition("=")[0].lower().replace("-", "_")
    name = _SETTING_ALIASES.get(name, name)
    if not word.startswith("--") or (
        name not in _SETTING_TYPES
        and name not in _OTHER_OPTIONS
        and name.replace("_", "-") not in _NEGATED_FLAGS
    ):
        spellings = [*_SETTING_TYPES, *_SETTING_ALIASES, *_OTHER_OPTIONS]
        known = ", ".join("--" + n.replace("_", "-") for n in [*spellings, *_NEGATED_FLAGS])
        raise Refusal(
            word, f"unknown option; known options: {known}", "option_unknown", option=word
        )
    return name


def _option_value(name: str, option: str, value: str) -> Any:
    convert = _SETTING_TYPES.get(name, str)
    try:
        return convert(value)
    except ValueError:
        raise Refusal(
            f"--{option}",
            f"{value!r} is not a valid {convert.__name__}",
            "option_value",
            option=f"--{option}",
            value=value,
        ) from None


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
        raise Refusal(
            "options", f"{exc} (put quotes around values with spaces)", "option_quotes"
        ) from None
    values: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        name = _option_name(word)
        option, _, inline_value = word.removeprefix("--").partition("=")
        if option.lower() in _NEGATED_FLAGS:
            values[_NEGATED_FLAGS[option.lower()]] = False
        elif _SETTING_TYPES.get(name) is bool:
            values[name] = True
        else:
            if not inline_value:
                if i + 1 >= len(words):
                    raise Refusal(
                        f"--{option}",
                        "needs a value",
                        "option_value",
                        option=f"--{option}",
                        value="",
                    )
                inline_value = words[i + 1]
                i += 1
            values[name] = _option_value(name, option, inline_value)
        i += 1
    if "size" in values:
        match = _SIZE.fullmatch(values.pop("size").strip())
        if not match:
            raise Refusal("--size", "must be WIDTHxHEIGHT, e.g. 512x768", "option_size")
        values["width"], values["height"] = int(match.group(1)), int(match.group(2))
    if "sampler_name" in values:
        values["sampler_name"] = check_sampler(values["sampler_name"], "--sampler")
    preset, ip = values.pop("preset", None), values.pop("ip", None)
    return text[: start.start()].strip(), Options(settings=values, preset=preset, ip=ip)


def extend_request(request: str, addition: str) -> str:
    """The request with `addition` (an "edit prompt" reply) added to its words, before the
    `--options` it may end with, so both stay readable: `水彩 --steps 30` + `换成国潮` →
    `水彩，换成国潮 --steps 30`."""
    start = _OPTIONS_START.search(request)
    cut = start.start() if start else len(request)
    return f"{request[:cut].rstrip()}，{addition.strip()} {request[cut:].strip()}".strip()


def _unquoted_end(value: str) -> int:
    """Where unquoted copy ends: at a space, unless it is between two English words and no
    keyword follows it (`Summer Sale subtitle ...` ends before `subtitle`)."""
    for space in re.finditer(r"\s+", value):
        before, after = value[space.start() - 1], value[space.end() : space.end() + 1]
        english = all(char.isascii() and char.isalnum() for char in before + after) and after
        if not english or _KEYWORD_AHEAD.match(value, space.end()):
            return space.start()
    return len(value.rstrip())


# Full-width digits and Latin letters (０-９, Ａ-Ｚ, ａ-ｚ) as typed by Chinese input methods.
_HALF_WIDTH = {code: code - 0xFEE0 for code in (*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B))}
_HALF_WIDTH |= {code: code - 0xFEE0 for code in range(0xFF41, 0xFF5B)}
_HAN_RUN = re.compile(r"[\u3400-\u9fff]+")


def half_width(text: str) -> str:
    """`来４张` -> `来4张`: full-width digits and letters as ASCII; punctuation stays."""
    return text.translate(_HALF_WIDTH)


def simplified_outside_quotes(text: str, dictionary: Dictionary) -> tuple[str, list[str]]:
    """Traditional characters written simplified (聖誕節 -> 圣诞节), except in quoted copy.

    Returns (text, the runs changed as "聖誕節 → 圣诞节") for the notes.
    """
    changed: list[str] = []

    def simplify(part: str) -> str:
        for run in _HAN_RUN.findall(part):
            if (simple := dictionary.to_simplified(run)) != run:
                changed.append(f"{run} → {simple}")
        return dictionary.to_simplified(part)

    pieces, done = [], 0
    for match in _BARE_QUOTE.finditer(text):
        pieces += [simplify(text[done : match.start()]), match.group(0)]
        done = match.end()
    pieces.append(simplify(text[done:]))
    return "".join(pieces), changed


def extract_titles(text: str) -> tuple[str, str, str, str, list[Note]]:
    """Find the poster's copy; return (title, subtitle, cta, text, notes).

    After 标题/title and a colon, 是, a space or a quote, the text (quoted, or up to
    the next punctuation, keyword or space between Chinese words) is the title; after
    副标题/subtitle the subtitle; after 文案/slogan the title if there is none yet,
    else the subtitle; after 按钮/日期/活动时间/行动号召/cta the call to action or
    date line. Otherwise the first quoted text is the title and the second the
    subtitle, and a call to action (立即下单, shop now) or a date (12月1日-12月12日)
    said alone is the cta.
    """
    found: dict[str, str] = {}
    notes: list[Note] = []

    def place(kind: str, value: str) -> None:
        value = value.strip()
        if not value:
            return
        if kind not in found:
            found[kind] = value
        elif kind == "title" and "subtitle" not in found:
            found["subtitle"] = value
        else:
            notes.append(Note("extra_poster_text", {"text": f"「{value}」"}))

    while match := _TITLE_KEYWORD.search(text):
        keyword = match.group(1).lower()
        value = next(group for group in match.groups()[1:] if group is not None)
        end = match.end()
        if match.group(_UNQUOTED) is not None:
            value = value[: _unquoted_end(value)]  # unquoted: up to a space or the next keyword
            end = match.start(match.lastindex) + len(value)
        if keyword in _SUBTITLE_KEYWORDS:
            place("subtitle", value)
        else:
            place("cta" if keyword in _CTA_KEYWORDS else "title", value)
        text = text[: match.start()] + "，" + text[end:]
    while match := _BARE_QUOTE.search(text):
        place("title", next(group for group in match.groups() if group is not None))
        text = _replace(text, match)
    for pattern in (_CTA_PHRASE, _DATE_LINE):  # 立即下单, 12月1日-12月12日: no keyword needed
        while match := pattern.search(text):
            place("cta", match.group(0))
            text = _replace(text, match)

    for name in ("title", "subtitle", "cta"):
        check_copy_length(name, found.get(name, ""))
    return found.get("title", ""), found.get("subtitle", ""), found.get("cta", ""), text, notes


def _words_pattern(words: list[str]) -> re.Pattern | None:
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])", re.I)


def _sizes_named(text: str, glossary: Glossary) -> list[tuple[re.Match, Target]]:
    """Every size written in `text` (1080x1920, 3:4, 小红书), with where it is, in reading order."""
    found = []
    for match in _SIZE_IN_TEXT.finditer(text):
        if match.group("physical"):
            if target := physical_target(match):
                found.append((match, target))
            continue
        if match.group("pixels"):
            found.append((match, Target.parse(match.group("pixels"))))
            continue
        width, height = int(match.group("ratio_width")), int(match.group("ratio_height"))
        said = match.group("keyword") or match.group("separator") == "比"
        if width != height and (said or (width, height) in COMMON_RATIOS):
            found.append((match, ratio_target(width, height)))
    # A channel word that is also a glossary term (海报) describes the picture in a request.
    channels = _words_pattern([word for word in glossary.channels if word not in glossary.terms])
    if channels:
        found += [(m, glossary.channels[m.group(0).lower()]) for m in channels.finditer(text)]
    return sorted(found, key=lambda pair: pair[0].start())


def _reshaped(channel: Target, ratio: Target) -> Target:
    """`channel` at the shape of `ratio`, keeping its long side: banner 1920x640 + 4:1 ->
    1920x480."""
    long = max(channel.width, channel.height)
    scale = long / max(ratio.width, ratio.height)
    width, height = round(ratio.width * scale), round(ratio.height * scale)
    return Target(f"{channel.name} {ratio.name}", width, height, channel.dpi)


def print_dpi(long_side_mm: float) -> int:
    """The resolution a print of this size is made at: 300 dpi up to A3, 150 up to a metre (an
    elevator frame, a poster board), 100 beyond (roll-up stands, banners are seen from afar)."""
    return 300 if long_side_mm <= 420 else 150 if long_side_mm <= 1000 else 100


def physical_target(match: re.Match) -> Target | None:
    """`60x160cm` as the pixels of that print at its dpi (never 60x160 pixels); None for a
    zero side."""
    unit = MM_PER_UNIT[match.group("unit").lower()]
    width_mm = float(match.group("physical_width")) * unit
    height_mm = float(match.group("physical_height")) * unit
    if width_mm <= 0 or height_mm <= 0:
        return None
    dpi = print_dpi(max(width_mm, height_mm))
    pixels = [round(side / MM_PER_INCH * dpi) for side in (width_mm, height_mm)]
    name = re.sub(r"\s+", "", match.group("physical"))
    return Target(name, pixels[0], pixels[1], dpi)


def extract_size(text: str, glossary: Glossary) -> tuple[list[Target], str | None, str]:
    """Find the finished sizes asked for (1080x1920, 3:4, 小红书 ...) and an orientation word.

    Returns (targets in the order named, orientation or None, text). A size named twice (抖音和
    手机壁纸: both 1080x1920) is kept once: the two posters would be the same file.
    """
    targets: list[Target] = []
    taken: list[re.Match] = []
    for match, target in _sizes_named(text, glossary):
        if taken and match.start() < taken[-1].end():
            continue  # inside a size already read
        between = text[taken[-1].end() : match.start()] if taken else "x"
        if match.group(0)[:1].isdigit() and ":" in target.name and not between.strip() and targets:
            # "banner 4:1": a ratio right after a channel gives that channel its shape
            target = _reshaped(targets.pop(), target)
        taken.append(match)
        if all(
            (t.width, t.height, t.dpi) != (target.width, target.height, target.dpi) for t in targets
        ):
            targets.append(target)
    for match in reversed(taken):
        text = _replace(text, match)
    orientation = None
    words = _words_pattern(list(glossary.orientations))
    while words and (match := words.search(text)):
        orientation = orientation or glossary.orientations[match.group(0).lower()]
        text = _replace(text, match)
    return targets, orientation, text


def extract_hires(text: str, glossary: Glossary) -> tuple[bool, str]:
    """Whether the request asks for hires fix (高清, hires ...)."""
    words = _words_pattern(list(glossary.hires_words))
    asked = False
    while words and (match := words.search(text)):
        asked = True
        text = _replace(text, match)
    return asked, text


def chinese_number(text: str) -> int:
    """'4' -> 4, '两' -> 2, '十二' -> 12, '二十' -> 20, 'four' -> 4; ValueError for what is not
    a number (十十, 两十, 二十十)."""
    if text.isdigit():
        return int(text)
    if text.lower() in _EN_NUMBERS:
        return _EN_NUMBERS.index(text.lower()) + 1
    tens, ten, ones = text.partition("十")
    if not ten and text in _CN_DIGITS:
        return _CN_DIGITS[text]
    # 十, 十二, 二十, 二十五: one 十, a digit 2-9 before it (never 两 or 一), a digit 1-9 after.
    if ten and tens in ("", *"二三四五六七八九") and ones in ("", *"一二三四五六七八九"):
        return (_CN_DIGITS[tens] if tens else 1) * 10 + (_CN_DIGITS[ones] if ones else 0)
    raise ValueError(f"count: {text!r} is not a number")


def count_range(first: str | None, last: str) -> tuple[int, int]:
    """The numbers a count phrase names, lowest first: `3`, `5` -> (3, 5); None, `两三` ->
    (2, 3): two different digits said as one word are a range. ValueError for nonsense."""
    if first is None and len(last) == 2 and set(last) <= _CN_DIGITS.keys() and "十" not in last:
        low, high = sorted(_CN_DIGITS[digit] for digit in last)
        if low == high:
            raise ValueError(f"count: {last!r} is not a number")
        return low, high
    numbers = sorted(chinese_number(text) for text in (first, last) if text is not None)
    return numbers[0], numbers[-1]


def extract_count(text: str, most: int | None = None) -> tuple[int | None, str, list[Note]]:
    """How many images: 来4张, 两张, x4, 4 images; a range (两三张, 3-5张) asks for its upper end,
    at most `most` (but never fewer than its lower end). Returns (count or None, text, notes):
    a count phrase that is no number (十十张) is dropped and noted."""
    if match := _SOME.search(text):
        return None, _replace(text, match), []
    for pattern in _COUNTS:
        if match := pattern.search(text):
            phrase, first_and_last = match.group(0), [None, *match.groups()][-2:]
            if enough := _ENOUGH.match(text, match.end()):
                text = text[: enough.start()] + text[enough.end() :]
            try:
                low, high = count_range(*first_and_last)
            except ValueError:
                return None, _replace(text, match), [Note("count_unreadable", {"phrase": phrase})]
            if low == high:
                return low, _replace(text, match), []
            count = max(low, min(high, most or high))
            note = Note("count_range", {"phrase": phrase, "low": low, "high": high, "count": count})
            return count, _replace(text, match), [note]
    return None, text, []


def extract_seed(text: str) -> tuple[int | None, str]:
    """A seed written in words: 种子123, seed: 42."""
    if match := _SEED.search(text):
        return int(match.group(1)), _replace(text, match)
    return None, text
