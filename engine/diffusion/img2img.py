"""Pictures in, WebUI's way: how an init image is fitted to the output size (`resize_mode`), how
an inpainting mask is read (white = repaint, `mask_blur`, `inpainting_mask_invert`), what the
masked area starts from (`inpainting_fill`), the region "only masked" works on
(`inpaint_full_res` with its padding), and how the result goes back over the original.

Pure Pillow and numpy: the generation code (engine/diffusion/generate.py) runs the pipelines;
everything here is a function of pictures and numbers, tested without a model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps

# WebUI's resize modes, by the numbers its API uses
JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL, LATENT_UPSCALE = 0, 1, 2, 3
RESIZE_MODES = {
    JUST_RESIZE: "Just resize",
    CROP_AND_RESIZE: "Crop and resize",
    RESIZE_AND_FILL: "Resize and fill",
    LATENT_UPSCALE: "Just resize (latent upscale)",
}
# WebUI's "Masked content", by the numbers its API uses
FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = 0, 1, 2, 3
MASKED_CONTENT = {
    FILL: "fill",
    ORIGINAL: "original",
    LATENT_NOISE: "latent noise",
    LATENT_NOTHING: "latent nothing",
}


def resize_image(image: Image.Image, mode: int, width: int, height: int) -> Image.Image:
    """`image` at width×height by WebUI's resize mode.

    Just resize stretches; crop and resize covers the size and cuts the overflow around the
    centre; resize and fill fits inside and fills the bands by stretching the picture's edge
    rows or columns. The latent-upscale mode resizes in latent space, so on pixels it is "just
    resize" (the generation code scales the latents instead when it can).
    """
    lanczos = Image.Resampling.LANCZOS
    if mode in (JUST_RESIZE, LATENT_UPSCALE) or image.size == (width, height):
        return image.resize((width, height), lanczos)
    ratio, source = width / height, image.width / image.height
    if mode == CROP_AND_RESIZE:
        scale = max(width / image.width, height / image.height)
        resized = image.resize(
            (max(width, round(image.width * scale)), max(height, round(image.height * scale))),
            lanczos,
        )
        left, top = (resized.width - width) // 2, (resized.height - height) // 2
        return resized.crop((left, top, left + width, top + height))
    if mode != RESIZE_AND_FILL:
        raise ValueError(f"resize_mode: {mode!r} is not one of 0, 1, 2, 3")
    scale = min(width / image.width, height / image.height)
    inner = image.resize(
        (max(1, round(image.width * scale)), max(1, round(image.height * scale))), lanczos
    )
    canvas = Image.new(image.mode, (width, height))
    left, top = (width - inner.width) // 2, (height - inner.height) // 2
    canvas.paste(inner, (left, top))
    if ratio > source:  # bands left and right: stretch the first and last columns
        if left > 0:
            canvas.paste(inner.crop((0, 0, 1, inner.height)).resize((left, height)), (0, 0))
        right = width - left - inner.width
        if right > 0:
            edge = inner.crop((inner.width - 1, 0, inner.width, inner.height))
            canvas.paste(edge.resize((right, height)), (left + inner.width, 0))
    else:  # bands above and below: stretch the first and last rows
        if top > 0:
            canvas.paste(inner.crop((0, 0, inner.width, 1)).resize((width, top)), (0, 0))
        bottom = height - top - inner.height
        if bottom > 0:
            edge = inner.crop((0, inner.height - 1, inner.width, inner.height))
            canvas.paste(edge.resize((width, bottom)), (0, top + inner.height))
    return canvas


@dataclass(frozen=True)
class Mask:
    """An inpainting mask at the output size: `sharp` says what to repaint (white) and goes to
    the pipeline; `soft` is `sharp` blurred by `mask_blur`, the alpha the result is pasted back
    over the original with (so outside the blurred edge the original pixels are untouched)."""

    sharp: Image.Image  # "L"
    soft: Image.Image  # "L"

    def box(self) -> tuple[int, int, int, int] | None:
        """The bounding box of what is repainted, or None when nothing is."""
        return self.sharp.point(lambda v: 255 if v >= 128 else 0).getbbox()


def read_mask(
    mask: Image.Image, width: int, height: int, resize_mode: int, blur: int, invert: bool
) -> Mask:
    """A request's mask as the output size's `Mask`. A mask with transparency counts its
    opaque pixels as painted (WebUI's rule for painted masks); otherwise its brightness counts."""
    transparent = mask.mode == "RGBA" and mask.getchannel("A").getextrema() != (255, 255)
    grey = mask.getchannel("A") if transparent else mask.convert("L")
    if invert:
        grey = ImageOps.invert(grey)
    sharp = resize_image(grey, resize_mode, width, height)
    soft = sharp.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else sharp
    return Mask(sharp, soft)


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """WebUI's "fill": the masked area painted with the colours around it, blurred ever finer,
    so the model starts from the surroundings' colours instead of what was there."""
    keep = ImageOps.invert(mask.convert("L"))
    known = Image.new("RGBa", image.size)  # premultiplied: blurring spreads colour, not black
    known.paste(image.convert("RGBA").convert("RGBa"), mask=keep)
    filled = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = known.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            filled.alpha_composite(layer)
    return filled.convert("RGB")


def region_around(
    box: tuple[int, int, int, int], padding: int, width: int, height: int, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The region "only masked" repaints: the mask's box grown by `padding`, then grown along one
    side to the output's aspect ratio, kept inside the `size` picture."""
    left, top, right, bottom = box
    left, top = max(0, left - padding), max(0, top - padding)
    right, bottom = min(size[0], right + padding), min(size[1], bottom + padding)
    ratio = width / height
    w, h = right - left, bottom - top
    if w / h < ratio:  # too narrow: widen around the centre
        grow = min(size[0], round(h * ratio)) - w
        left = max(0, left - grow // 2)
        right = min(size[0], left + w + grow)
        left = max(0, right - w - grow)
    else:  # too flat: heighten
        grow = min(size[1], round(w / ratio)) - h
        top = max(0, top - grow // 2)
        bottom = min(size[1], top + h + grow)
        top = max(0, bottom - h - grow)
    return left, top, right, bottom


def paste_back(result: Image.Image, original: Image.Image, mask: Mask) -> Image.Image:
    """The repainted picture over the original through the blurred mask (WebUI's overlay)."""
    return Image.composite(result.convert("RGB"), original.convert("RGB"), mask.soft)


def seeded_noise_picture(size: tuple[int, int], seed: int) -> Image.Image:
    """Coloured noise from `seed`: what "latent noise" starts the masked area from."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def upscaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The size of a picture enlarged by `scale` (SD upscale's output)."""
    return round(size[0] * scale), round(size[1] * scale)


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of `tile` pixels start along a side of `length`, overlapping by at least
    `overlap`, the first at 0 and the last ending at the edge (WebUI's SD upscale grid)."""
    if length <= tile:
        return [0]
    step = max(1, tile - overlap)
    count = math.ceil((length - overlap) / step)
    count = max(count, 2)
    spacing = (length - tile) / (count - 1)
    return [round(i * spacing) for i in range(count)]


def blend_tiles(
    size: tuple[int, int], tiles: list[tuple[Image.Image, tuple[int, int]]], overlap: int
) -> Image.Image:
    """Tiles put back together, each fading into its neighbours across the overlap (a linear
    ramp on every inner edge), so no seam shows where two renderings meet."""
    width, height = size
    total = np.zeros((height, width, 3), np.float64)
    weight = np.zeros((height, width, 1), np.float64)
    for tile, (x, y) in tiles:
        w, h = tile.size
        ramp_x = _ramp(w, overlap, x > 0, x + w < width)
        ramp_y = _ramp(h, overlap, y > 0, y + h < height)
        mask = (ramp_y[:, None] * ramp_x[None, :])[..., None]
        total[y : y + h, x : x + w] += np.asarray(tile.convert("RGB"), np.float64) * mask
        weight[y : y + h, x : x + w] += mask
    return Image.fromarray(
        np.clip(total / np.maximum(weight, 1e-8), 0, 255).round().astype(np.uint8)
    )


def _ramp(length: int, overlap: int, fade_in: bool, fade_out: bool) -> np.ndarray:
    ramp = np.ones(length)
    span = min(overlap, length // 2)
    if span > 0:
        edge = (np.arange(span) + 1) / (span + 1)
        if fade_in:
            ramp[:span] = edge
        if fade_out:
            ramp[length - span :] = edge[::-1]
    return ramp
