"""Image sizes: Stable Diffusion generates in multiples of 64; posters come in any size."""

from __future__ import annotations

import math

# The VAE shrinks the image 8x and the UNet halves that three more times, so sides that are
# multiples of 64 avoid padding and cropping (kohya buckets and WebUI users round to 64 as well).
SIZE_MULTIPLE = 64
PORTRAIT_RATIO = 1.5  # 2:3, the designers' usual 512x768


def round_to_multiple(value: float) -> int:
    """The nearest multiple of 64, at least 64."""
    return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def orientation_size(orientation: str, width: int, height: int) -> tuple[int, int]:
    """Give the size (width, height) a `portrait`, `landscape` or `square` shape, keeping its
    short side: 512x768 -> landscape 768x512, square 512x512."""
    short = min(width, height)
    long = round_to_multiple(short * PORTRAIT_RATIO)
    shapes = {"portrait": (short, long), "landscape": (long, short), "square": (short, short)}
    if orientation not in shapes:
        raise ValueError(f"orientation: must be one of {sorted(shapes)}, not {orientation!r}")
    return shapes[orientation]


def generation_size(final_width: int, final_height: int, max_area: int) -> tuple[int, int]:
    """The 64-multiple size to generate a `final_width` x `final_height` image at.

    Models make their best images near the area they were trained at (`max_area`, the default
    size's area), so a larger final size keeps its shape but is generated at about that area and
    resized afterwards: 1080x1920 at 512x768's area -> 512x896.
    """
    if final_width <= 0 or final_height <= 0:
        raise ValueError(f"size: {final_width}x{final_height} must be positive")
    scale = min(1.0, math.sqrt(max_area / (final_width * final_height)))
    return round_to_multiple(final_width * scale), round_to_multiple(final_height * scale)
