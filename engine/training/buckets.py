"""kohya's aspect-ratio buckets: the sizes images train at, and how an image is fitted to one.

The report shows each image's bucket and crop; the trainer scales and crops by the same rules.
"""

from __future__ import annotations

import math

BUCKET_STEP = 64  # SD latents are 1/8 of the image and the UNet halves them 3 times


def make_buckets(
    resolution: int, min_reso: int, max_reso: int, step: int = BUCKET_STEP
) -> list[tuple[int, int]]:
    """kohya's bucket sizes: each side a multiple of `step`, area at most `resolution`²."""
    max_area = resolution * resolution
    side = resolution // step * step
    buckets = {(side, side)}
    for width in range(min_reso, max_reso + 1, step):
        height = min(max_reso, max_area // width // step * step)
        if height >= min_reso:
            buckets |= {(width, height), (height, width)}
    return sorted(buckets)


def choose_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket with the aspect ratio nearest the image's (ties: the larger bucket)."""
    ratio = width / height
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1] / ratio)), -b[0] * b[1]))


def fit_to_bucket(width: int, height: int, bucket: tuple[int, int]) -> tuple[int, int, int, int]:
    """Scale that covers `bucket`, then centre crop: (scaled w, scaled h, crop x, crop y)."""
    scale = max(bucket[0] / width, bucket[1] / height)
    scaled_w = max(bucket[0], round(width * scale))
    scaled_h = max(bucket[1], round(height * scale))
    return scaled_w, scaled_h, (scaled_w - bucket[0]) // 2, (scaled_h - bucket[1]) // 2
