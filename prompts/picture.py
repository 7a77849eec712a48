"""A poster drawn from a picture (img2img): what it adds to a txt2img request. Pure functions.

The picture's shape is kept unless the request names a size or orientation, at about the area
the request would have drawn; its content is followed as closely as the denoising strength
says, which the chat's "更像原图 / 更自由" buttons step.
"""

from __future__ import annotations

import math
from typing import Any

from prompts.lexicon import Glossary
from prompts.request import extract_size, split_options

CROP_AND_RESIZE = 1  # WebUI's resize mode: cover the size, cut the overflow around the centre
STRENGTH_STEP = 0.15
MIN_STRENGTH, MAX_STRENGTH = 0.15, 0.95  # 0 would give the picture back, 1 would ignore it
SIZE_MULTIPLE = 64  # what models are trained on


def names_a_size(request: str, glossary: Glossary) -> bool:
    """Whether a request says its size or shape (a channel, WxH, a ratio, 竖版, --width)."""
    text, options = split_options(request)
    if {"width", "height"} & options.settings.keys():
        return True
    targets, orientation, _ = extract_size(text, glossary)
    return bool(targets or orientation)


def fitted_size(picture: tuple[int, int], area: int) -> tuple[int, int]:
    """The generation size with the picture's aspect ratio and about `area` pixels, in
    multiples of 64; a landscape or portrait picture never becomes square by the rounding."""
    aspect = picture[0] / picture[1]
    width = math.sqrt(area * aspect)

    def rounded(value: float) -> int:
        return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)

    size = [rounded(width), rounded(width / aspect)]
    if size[0] == size[1] and picture[0] != picture[1]:
        size[0 if aspect > 1 else 1] += SIZE_MULTIPLE
    return size[0], size[1]


def from_picture(
    params: dict[str, Any],
    picture: Any,
    picture_size: tuple[int, int],
    strength: float,
    keep_shape: bool,
) -> dict[str, Any]:
    """A txt2img request's params as img2img of `picture` (a stored reference or
    {"output": path}) at `strength`; the picture's shape when `keep_shape`."""
    changed = dict(params) | {
        "init_images": [picture],
        "denoising_strength": strength,
        "resize_mode": CROP_AND_RESIZE,
    }
    changed.pop("subseed_strength", None)  # variation seeds are txt2img's
    if keep_shape:
        changed["width"], changed["height"] = fitted_size(
            picture_size, params["width"] * params["height"]
        )
    return changed


def stepped_strength(strength: float, direction: int) -> float:
    """One step closer to the picture (direction -1) or freer from it (+1), within bounds."""
    stepped = strength + direction * STRENGTH_STEP
    return round(min(MAX_STRENGTH, max(MIN_STRENGTH, stepped)), 2)
