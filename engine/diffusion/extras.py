"""WebUI's Extras tab for one picture: upscale by a factor or to a size (cropped to it or not),
optionally blending a second upscaler in, then restore faces — in that order, as WebUI 1.x runs
its postprocessing scripts (upscale, then GFPGAN).

Upscalers are hires fix's image upscalers (`engine.diffusion.hires`: Lanczos, Nearest, ESRGAN
family files in models/ESRGAN); faces are `engine.diffusion.faces`. `extras_params` checks a
request without torch (the service runs it at submit); `postprocess` runs it (the worker).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from engine.diffusion import hires
from engine.diffusion.infotext import quote
from engine.diffusion.params import check_range
from posterbot.errors import Refusal

NO_UPSCALER = "None"  # WebUI's name for "leave this step out"
RESIZE_BY, RESIZE_TO = 0, 1  # WebUI's resize_mode: by upscaling_resize, to _w × _h
MAX_FACTOR = 8  # WebUI's "Resize" slider goes to 8
MAX_SIDE = 8192  # WebUI's width/height sliders; a 69 cm print at 300 dpi


@dataclass(frozen=True)
class ExtrasParams:
    """One Extras run, under WebUI's field names; `image` is a stored picture's reference."""

    image: str
    resize_mode: int = RESIZE_BY
    upscaling_resize: float = 2.0
    upscaling_resize_w: int = 512
    upscaling_resize_h: int = 512
    upscaling_crop: bool = True
    upscaler_1: str = NO_UPSCALER
    upscaler_2: str = NO_UPSCALER
    extras_upscaler_2_visibility: float = 0.0
    gfpgan_visibility: float = 0.0
    face_restoration_model: str | None = None  # None: GFPGAN, else whichever is installed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def upscales(self) -> bool:
        return self.upscaler_1 != NO_UPSCALER

    @property
    def restores_faces(self) -> bool:
        return self.gfpgan_visibility > 0

    def factor(self, width: int, height: int) -> float:
        """How much the upscaler enlarges a width×height picture (to a size: enough to cover
        it, as WebUI does)."""
        if self.resize_mode == RESIZE_TO:
            return max(self.upscaling_resize_w / width, self.upscaling_resize_h / height)
        return self.upscaling_resize

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of the result for a width×height picture."""
        if not self.upscales:
            return width, height
        if self.resize_mode == RESIZE_TO and self.upscaling_crop:
            return self.upscaling_resize_w, self.upscaling_resize_h
        factor = self.factor(width, height)
        return round(width * factor), round(height * factor)


FIELDS = tuple(name for name in ExtrasParams.__dataclass_fields__)


def extras_params(request: dict[str, Any]) -> ExtrasParams:
    """A request's fields checked (the picture already stored); a Refusal naming the field."""
    unknown = sorted(set(request) - set(FIELDS))
    if unknown:
        raise Refusal(unknown[0], f"unknown extras field (known: {', '.join(FIELDS)})")
    params = ExtrasParams(**request)
    if params.resize_mode not in (RESIZE_BY, RESIZE_TO) or isinstance(params.resize_mode, bool):
        raise Refusal(
            "resize_mode", f"must be 0 (by a factor) or 1 (to a size), not {params.resize_mode!r}"
        )
    for name in ("upscaling_resize", "extras_upscaler_2_visibility", "gfpgan_visibility"):
        value = getattr(params, name)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise Refusal(name, f"must be a number, not {value!r}")
    check_range("upscaling_resize", params.upscaling_resize, 1, MAX_FACTOR)
    check_range("extras_upscaler_2_visibility", params.extras_upscaler_2_visibility, 0, 1)
    check_range("gfpgan_visibility", params.gfpgan_visibility, 0, 1)
    for name in ("upscaling_resize_w", "upscaling_resize_h"):
        value = getattr(params, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Refusal(name, f"must be a whole number of pixels, not {value!r}")
        check_range(name, value, 1, MAX_SIDE)
    if not isinstance(params.upscaling_crop, bool):
        raise Refusal("upscaling_crop", f"must be true or false, not {params.upscaling_crop!r}")
    for name in ("upscaler_1", "upscaler_2"):
        if not isinstance(getattr(params, name), str):
            raise Refusal(name, f"must be an upscaler's name, not {getattr(params, name)!r}")
    return params


def postprocess(
    params: ExtrasParams,
    image: Image.Image,
    upscalers: dict[str, Path],
    restorer: Path | None = None,
    detector: Path | None = None,
) -> tuple[Image.Image, str]:
    """The picture as the Extras tab makes it, and its description (WebUI's `html_info`, also
    the PNG's `postprocessing` text)."""
    info: dict[str, Any] = {}
    # 1. upscale, blending the second upscaler in
    if params.upscales:
        factor = params.factor(image.width, image.height)
        size = (round(image.width * factor), round(image.height * factor))
        first = upscale(image, params.upscaler_1, size, upscalers, "upscaler_1")
        info["Postprocess upscale by"] = round(factor, 4)
        info["Postprocess upscaler"] = params.upscaler_1
        if params.upscaler_2 != NO_UPSCALER and params.extras_upscaler_2_visibility > 0:
            second = upscale(image, params.upscaler_2, size, upscalers, "upscaler_2")
            first = Image.blend(first, second, params.extras_upscaler_2_visibility)
            info["Postprocess upscaler 2"] = params.upscaler_2
            info["Postprocess upscaler 2 visibility"] = params.extras_upscaler_2_visibility
        # 2. crop to the size asked for: the middle of the picture, as WebUI crops
        if params.resize_mode == RESIZE_TO and params.upscaling_crop:
            target = (params.upscaling_resize_w, params.upscaling_resize_h)
            cropped = Image.new("RGB", target)
            offset = (target[0] // 2 - first.width // 2, target[1] // 2 - first.height // 2)
            cropped.paste(first, offset)
            first = cropped
            info["Postprocess crop to"] = f"{target[0]}x{target[1]}"
        image = first
    # 3. restore faces
    if params.restores_faces and restorer is not None:
        from engine.diffusion.faces import family_of, restore_faces

        image = restore_faces([image], restorer, params.gfpgan_visibility, detector)[0]
        info["Face restoration"] = family_of(restorer.stem)
        info["GFPGAN visibility"] = params.gfpgan_visibility
    return image, ", ".join(f"{key}: {quote(value)}" for key, value in info.items())


def upscale(
    image: Image.Image, name: str, size: tuple[int, int], upscalers: dict[str, Path], field: str
) -> Image.Image:
    return hires.upscale_images([image.convert("RGB")], name, *size, upscalers, field)[0]
