"""Chinese line breaking and fitting a text into a box, as pure functions over a width measure.

Line-breaking rules (禁则) as Chinese typesetting uses them: no line starts with closing
punctuation (，。、；：？！）」』】》… and closing quotes), no line ends with an opening bracket or
quote, and a Latin word or a number (with its sign, decimals or %) is never split.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from PIL import ImageFont

NO_LINE_START = set("，。、；：？！）」』】》〉…—～,.;:?!)]}%’”·")
NO_LINE_END = set("（「『【《〈([{‘“")
# A Latin word or a number stays whole: letters/digits with inner . , ' - + % : / &
_UNIT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.,'’\-+%:/&]*[A-Za-z0-9%]|[A-Za-z0-9]|\s+|.", re.S)
# Punctuation and spaces end a phrase; lines break between phrases when the phrases fit, so
# "圣诞快乐，达达送福到家！" reads "圣诞快乐，/达达送福到家！", not "圣诞快乐，达/达送福到家！".
PHRASE_END = set("，、；：。！？ ,;:!?")
PHRASE_SIZE_SHARE = 0.75  # phrase breaks are worth a font this much smaller, not less
LINE_SPACING = 1.25  # line height as a multiple of the font size
MIN_FONT_PX = 12  # below this a poster line is not legible on a phone


@dataclass(frozen=True)
class FittedText:
    """A text fitted into a box: its lines, the font size and the block's size in pixels."""

    lines: list[str]
    size: int
    width: int
    height: int


def units(text: str) -> list[str]:
    """The pieces a line may break between: one CJK character, a whole Latin word or number,
    a run of spaces, or a newline."""
    return _UNIT.findall(text)


def break_lines(
    text: str, width_of: Callable[[str], float], max_width: float, *, whole_phrases: bool = False
) -> list[str] | None:
    """Greedy line breaking within `max_width`, then the 禁则 rules; "\\n" forces a break.

    With `whole_phrases`, lines break only between phrases (after punctuation or a space), and
    None means a phrase is wider than `max_width`. A single unit wider than `max_width` (a long
    Latin word) keeps its own line; the caller picks a smaller font for it.
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        pieces = units(paragraph.strip())
        if whole_phrases:
            pieces = _phrases(pieces)
            if any(width_of(phrase.strip()) > max_width for phrase in pieces):
                return None
        lines += _break_paragraph(pieces, width_of, max_width)
    return lines


def _phrases(pieces: list[str]) -> list[str]:
    """The units joined into phrases, each ending after punctuation or a space."""
    phrases = [""]
    for piece in pieces:
        phrases[-1] += piece
        if piece in PHRASE_END or piece.isspace():
            phrases.append("")
    return [phrase for phrase in phrases if phrase]


def _break_paragraph(
    pieces: list[str], width_of: Callable[[str], float], max_width: float
) -> list[str]:
    lines: list[list[str]] = [[]]
    for piece in pieces:
        line = lines[-1]
        if line and width_of("".join([*line, piece]).rstrip()) > max_width and not piece.isspace():
            lines.append([piece])
        elif piece.isspace() and not line:
            continue  # no line starts with a space
        else:
            line.append(piece)
    for i in range(1, len(lines)):
        previous, current = lines[i - 1], lines[i]
        # Closing punctuation may not start a line: take the previous line's last unit along,
        # or, when that is the line's only unit, let the punctuation hang at its end.
        while current and current[0] in NO_LINE_START:
            if len(previous) > 1 and previous[-1] not in NO_LINE_START:
                current.insert(0, previous.pop())
            else:
                previous.append(current.pop(0))
        # An opening bracket may not end a line: move it down to what it opens.
        while len(previous) > 1 and previous[-1] in NO_LINE_END:
            current.insert(0, previous.pop())
    return ["".join(line).strip() for line in lines if "".join(line).strip()]


def fit_text(
    text: str,
    font_at: Callable[[int], ImageFont.FreeTypeFont],
    box_width: int,
    box_height: int,
    *,
    max_lines: int,
    max_size: int,
    min_size: int = MIN_FONT_PX,
) -> FittedText:
    """The largest font size (binary search, not a table) at which `text` fits the box in at
    most `max_lines` lines, the lines balanced so the last one is not a lone word.

    Raises ValueError naming the text when it does not fit even at `min_size`.
    """
    if not text.strip():
        raise ValueError("text: empty")

    def layout(size: int, whole_phrases: bool) -> FittedText | None:
        width_of = lru_cache(maxsize=None)(font_at(size).getlength)  # lines are re-measured
        lines = break_lines(text, width_of, box_width, whole_phrases=whole_phrases)
        if lines is None:
            return None
        line_height = round(size * LINE_SPACING)
        widest = max(width_of(line) for line in lines)
        height = line_height * (len(lines) - 1) + size
        if len(lines) > max_lines or widest > box_width or height > box_height:
            return None
        lines = _balance(text, lines, width_of, box_width, whole_phrases)
        return FittedText(lines, size, round(max(width_of(line) for line in lines)), height)

    def largest(whole_phrases: bool) -> FittedText | None:
        low, high, best = min_size, max(min_size, max_size), None
        while low <= high:
            middle = (low + high) // 2
            fitted = layout(middle, whole_phrases)
            if fitted:
                best, low = fitted, middle + 1
            else:
                high = middle - 1
        return best

    best = largest(whole_phrases=False)
    if best is None:
        raise ValueError(f"text: {text!r} does not fit a {box_width}x{box_height} box")
    if len(best.lines) > 1 and any(char in PHRASE_END for char in text.strip()[:-1]):
        by_phrase = largest(whole_phrases=True)
        if by_phrase and by_phrase.size >= PHRASE_SIZE_SHARE * best.size:
            return by_phrase
    return best


def _balance(
    text: str,
    lines: list[str],
    width_of: Callable[[str], float],
    max_width: float,
    whole_phrases: bool,
) -> list[str]:
    """The same number of lines at the narrowest width that still gives that number."""
    if len(lines) < 2:
        return lines
    low, high = max_width / len(lines), max_width
    best = lines
    for _ in range(8):  # to within 1/256 of the box width
        middle = (low + high) / 2
        trial = break_lines(text, width_of, middle, whole_phrases=whole_phrases)
        if (
            trial
            and len(trial) <= len(lines)
            and max(width_of(line) for line in trial) <= middle + 0.5
        ):
            best, high = trial, middle
        else:
            low = middle
    return best
