"""Fonts that come with the install, and the check that a text has every glyph it needs.

The default family is Noto Sans SC (SIL Open Font License 1.1: free to bundle and to use in
commercial posters), shipped by the PyPI package `justmytype-intl-cjk` together with its licence
text, so a fresh clone draws Chinese without relying on whatever the system has. Its variable
`wght` axis gives the bold title and the regular subtitle from one file. Noto Sans TC, JP and KR
from the same package are the fallbacks for characters SC lacks. `[[ips]] brand` may name other
font files.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import justmytype_intl_cjk
from fontTools.ttLib import TTFont
from PIL import ImageFont

BUNDLED_DIR = Path(justmytype_intl_cjk.__file__).parent / "fonts" / "ofl"
BUNDLED = {
    "Noto Sans SC": BUNDLED_DIR / "notosanssc" / "NotoSansSC[wght].ttf",
    "Noto Sans TC": BUNDLED_DIR / "notosanstc" / "NotoSansTC[wght].ttf",
    "Noto Sans JP": BUNDLED_DIR / "notosansjp" / "NotoSansJP[wght].ttf",
    "Noto Sans KR": BUNDLED_DIR / "notosanskr" / "NotoSansKR[wght].ttf",
}
DEFAULT_FAMILY = "Noto Sans SC"
FALLBACK_FAMILIES = ("Noto Sans TC", "Noto Sans JP", "Noto Sans KR")
TITLE_WEIGHT = 800
TEXT_WEIGHT = 500


class MissingGlyphs(ValueError):
    """No available font has these characters; drawing them would show empty boxes ("tofu")."""

    def __init__(self, characters: list[str]) -> None:
        shown = "".join(dict.fromkeys(characters))
        super().__init__(f"text: no font has the characters {shown!r}; leave them out")
        self.characters = shown


@dataclass(frozen=True)
class Face:
    """A font to draw with: the family name an SVG names, its file and the weight."""

    family: str
    path: Path
    weight: int

    def at(self, size: int) -> ImageFont.FreeTypeFont:
        return _load(self.path, size, self.weight)


def family_path(family: str) -> Path:
    """A bundled family's file, or a font file's path; ValueError naming it when neither."""
    if family in BUNDLED:
        return BUNDLED[family]
    path = Path(family)
    if path.suffix.lower() not in (".ttf", ".otf", ".ttc") or not path.is_file():
        known = ", ".join(BUNDLED)
        raise ValueError(f"font: {family!r} is neither a bundled family ({known}) nor a font file")
    return path


@cache
def _codepoints(path: Path) -> frozenset[int]:
    with TTFont(path, lazy=True, fontNumber=0) as font:
        return frozenset(font.getBestCmap())


def missing(text: str, path: Path) -> list[str]:
    """The characters of `text` (spaces aside) that the font at `path` has no glyph for."""
    have = _codepoints(path)
    return [char for char in text if not char.isspace() and ord(char) not in have]


def choose_face(text: str, families: list[str], weight: int) -> Face:
    """The first of `families`, then the bundled fallbacks, that has every character of `text`.

    Raises MissingGlyphs listing the characters no font has, so nothing renders as tofu.
    """
    candidates = list(dict.fromkeys([*families, DEFAULT_FAMILY, *FALLBACK_FAMILIES]))
    for family in candidates:
        path = family_path(family)
        if not missing(text, path):
            name = family if family in BUNDLED else path.stem
            return Face(name, path, weight)
    raise MissingGlyphs(missing(text, family_path(candidates[0])))


@lru_cache(maxsize=256)  # fitting tries a few sizes per text; posters reuse them
def _load(path: Path, size: int, weight: int) -> ImageFont.FreeTypeFont:
    font = ImageFont.truetype(str(path), size)
    try:
        axes = font.get_variation_axes()
    except OSError:  # not a variable font: its one weight it is
        return font
    wanted = [max(axis["minimum"], min(axis["maximum"], weight)) for axis in axes]
    font.set_variation_by_axes(wanted)
    return font
