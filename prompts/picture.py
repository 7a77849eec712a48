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
    if keep_shape:
        changed["width"], changed["height"] = fitted_size(
            picture_size, params["width"] * params["height"]
        )
    return changed


def stepped_strength(strength: float, direction: int) -> float:
    """One step closer to the picture (direction -1) or freer from it (+1), within bounds."""
    stepped = strength + direction * STRENGTH_STEP
    return round(min(MAX_STRENGTH, max(MIN_STRENGTH, stepped)), 2)


# What a message says it wants from a picture besides "draw from it": its layout (a sketch, a
# composition) or its pose, drawn with ControlNet instead of img2img.
CONTROL_PHRASES = {
    "sketch": ("按这个草图", "照这个草图", "按草图", "照草图", "根据草图", "用这个草图", "按线稿"),
    "layout": ("参考构图", "按这个构图", "照这个构图", "按构图", "参考这个构图", "照这个布局"),
    "pose": ("照这个姿势", "按这个姿势", "照这个动作", "按这个动作", "参考姿势", "参考这个姿势"),
}


def control_intent(request: str) -> tuple[str | None, str]:
    """("sketch" | "layout" | "pose" | None, the request without the phrase)."""
    for intent, phrases in CONTROL_PHRASES.items():
        for phrase in phrases:
            if phrase in request:
                return intent, request.replace(phrase, "，").strip("，, ")
    return None, request


# The preprocessor each intent runs on the picture: a sketch is dark lines on white (inverted
# to the white-on-black scribble ControlNets expect), a composition is the photo's edges.
CONTROL_MODULES = {"sketch": "invert", "layout": "canny", "pose": "openpose"}
# Which installed ControlNet model serves each intent, by words in its file name.
CONTROL_MODEL_WORDS = {
    "sketch": ("scribble", "lineart", "sketch", "canny"),
    "layout": ("canny", "lineart", "scribble"),
    "pose": ("openpose", "pose"),
}


def control_model(intent: str, models: list[str], configured: str = "") -> str | None:
    """The ControlNet model for `intent` among the installed `models` ("name [hash]"): the
    configured one, else the first whose name has the intent's words in their order."""
    if configured:
        return next((m for m in models if m.split(" [")[0] == configured), None)
    for word in CONTROL_MODEL_WORDS[intent]:
        for model in models:
            if word in model.lower():
                return model
    return None


def with_control(
    params: dict[str, Any],
    picture: Any,
    picture_size: tuple[int, int],
    module: str,
    model: str,
    keep_shape: bool,
) -> dict[str, Any]:
    """A txt2img request's params with one ControlNet unit over `picture`, in its shape."""
    unit = {
        "enabled": True,
        "module": module,
        "model": model,
        "weight": 1.0,
        "image": picture,
        "resize_mode": "Crop and Resize",
        "pixel_perfect": True,
    }
    changed = dict(params) | {"controlnet": [unit]}
    if keep_shape:
        changed["width"], changed["height"] = fitted_size(
            picture_size, params["width"] * params["height"]
        )
    return changed
