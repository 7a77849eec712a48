"""Where the copy goes: three layouts, scored against the picture's saliency.

- `top`: title and subtitle across the top, call to action and footer at the bottom;
- `bottom`: everything stacked at the bottom on a band;
- `side`: a column in the left or right third (landscape pictures only).

`choose_layout` picks the layout whose text would cover the least of the subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from poster.saliency import Box, mass_in

LAYOUTS = ("top", "bottom", "side")
SIDE_MIN_ASPECT = 1.2  # width / height above which a side column reads well
MARGIN = 0.06  # of the short side
TITLE_SHARE = 0.26  # of the height: the title block's region in portrait layouts
SIDE_SHARE = 0.36  # of the width: the side column
MIN_SHARE = 0.16  # the least a title region shrinks to when the subject takes the rest
SUBJECT_OVERLAP_WEIGHT = 3.0  # covering the subject's box weighs more than diffuse saliency


@dataclass(frozen=True)
class Region:
    """A text region in pixels and how its lines align inside it."""

    x0: int
    y0: int
    x1: int
    y1: int
    align: str  # "center" or "left"
    anchor: str  # "top", "bottom" or "middle": where the stacked lines sit in the region

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def fraction(self, width: int, height: int) -> Box:
        return (self.x0 / width, self.y0 / height, self.x1 / width, self.y1 / height)


@dataclass(frozen=True)
class Plan:
    """A layout on a poster of a given size: the title block's region and the small lines'."""

    name: str
    title: Region
    small: Region  # call to action and footer
    band: bool  # the title block sits on a band (always for `bottom`)


def allowed_layouts(width: int, height: int) -> list[str]:
    return [name for name in LAYOUTS if name != "side" or width / height >= SIDE_MIN_ASPECT]


def plan(
    name: str, width: int, height: int, side: str = "left", subject: Box | None = None
) -> Plan:
    """The regions of layout `name` on a `width` x `height` poster; ValueError for an unknown
    layout or a side column on a portrait poster.

    The title's region shrinks toward its edge to stay clear of the `subject` box (fractions)
    while that leaves at least the minimum share; past that the text goes over the subject on a
    band or with a colour chosen for contrast.
    """
    if name not in LAYOUTS:
        raise ValueError(f"layout: must be one of {', '.join(LAYOUTS)}, not {name!r}")
    if name not in allowed_layouts(width, height):
        raise ValueError(f"layout: {name} needs a landscape poster, not {width}x{height}")
    x0, y0, x1, y1 = subject or (1.0, 1.0, 0.0, 0.0)  # no subject: nothing to avoid
    m = round(MARGIN * min(width, height))
    small_height = round(0.09 * height) if name != "side" else round(0.12 * height)
    if name == "top":
        room = _room(y0 * height - 2 * m, TITLE_SHARE * height, MIN_SHARE * height)
        title = Region(m, m, width - m, m + room, "center", "top")
        small = Region(m, height - m - small_height, width - m, height - m, "center", "bottom")
        return Plan(name, title, small, band=False)
    if name == "bottom":
        bottom = height - m - small_height
        room = _room(bottom - y1 * height - m, TITLE_SHARE * height, MIN_SHARE * height)
        title = Region(m, bottom - room, width - m, bottom, "center", "bottom")
        small = Region(m, bottom, width - m, height - m, "center", "bottom")
        return Plan(name, title, small, band=True)
    free = x0 * width - 2 * m if side == "left" else width - x1 * width - 2 * m
    column = _room(free, SIDE_SHARE * width, MIN_SHARE * width)
    left = m if side == "left" else width - m - column
    title = Region(left, m, left + column, height - m - small_height, "left", "middle")
    small = Region(left, height - m - small_height, left + column, height - m, "left", "bottom")
    return Plan(name, title, small, band=False)


def _room(free: float, preferred: float, least: float) -> int:
    """The preferred size, shrunk to the free space, but never below `least`."""
    return round(max(least, min(preferred, free)))


def candidates(width: int, height: int, subject: Box | None = None) -> list[Plan]:
    plans = []
    for name in allowed_layouts(width, height):
        sides = ("left", "right") if name == "side" else ("left",)
        plans += [plan(name, width, height, side, subject) for side in sides]
    return plans


def overlap(a: Box, b: Box) -> float:
    """The share of box `b`'s area that box `a` covers."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (b[2] - b[0]) * (b[3] - b[1])
    return w * h / area if area else 0.0


def score(text_box: Box, saliency: np.ndarray, subject: Box) -> float:
    """Lower is better: saliency under the text plus a penalty for covering the subject."""
    return mass_in(saliency, text_box) + SUBJECT_OVERLAP_WEIGHT * overlap(text_box, subject)
