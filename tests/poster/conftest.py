"""Pictures with a subject at a known place, as a poster's picture would have one."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw


def mascot_picture(
    size: tuple[int, int] = (512, 768),
    subject: tuple[float, float, float, float] = (0.3, 0.45, 0.7, 0.95),
    background: str = "sky",
    seed: int = 0,
) -> Image.Image:
    """A picture whose subject (a round-headed figure) fills `subject` (fractions)."""
    width, height = size
    rng = np.random.default_rng(seed)
    if background == "busy":
        noise = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(noise).resize(size, Image.Resampling.NEAREST)
    else:
        colours = {"sky": (120, 170, 220), "white": (255, 255, 255), "black": (0, 0, 0)}
        image = Image.new("RGB", size, colours.get(background, (128, 128, 128)))
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = (
        subject[0] * width,
        subject[1] * height,
        subject[2] * width,
        subject[3] * height,
    )
    head = (y1 - y0) * 0.35
    draw.ellipse((x0, y0 + head * 0.8, x1, y1), fill=(230, 90, 40), outline=(40, 20, 10), width=3)
    middle = (x0 + x1) / 2
    draw.ellipse((middle - head / 2, y0, middle + head / 2, y0 + head), fill=(250, 220, 180))
    draw.ellipse(
        (middle - head / 5, y0 + head / 3, middle - head / 10, y0 + head / 2), fill=(0, 0, 0)
    )
    return image


@pytest.fixture(scope="session")
def ocr():
    from rapidocr_onnxruntime import RapidOCR

    return RapidOCR()
