"""Composing one finished poster vs just resizing the picture, same input, one run.

From a 512x768 picture with a subject, to 1080x1920: placement (saliency, layouts), Chinese text
fitting, legibility (colour or band to 4.5:1), logo and the subject-keeping crop; the baseline
resizes the same picture to 1080x1920 with the same filter. Prints the median of each over
`--rounds` runs (after a warm-up that loads the font), their ratio, and the absolute time.
Goal: under 150 ms per poster on this CPU.

    .venv/bin/python bench/poster_finish.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from poster.compose import Brand, Copy, compose_poster

SIZE = (1080, 1920)
GOAL_MS = 150
COPY = Copy("圣诞快乐，达达送福到家！", "12月25日 全场满99减20", "立即下单")


def picture() -> Image.Image:
    """A poster-like picture: a flat background with a figure in the lower half."""
    image = Image.new("RGB", (512, 768), (120, 170, 220))
    draw = ImageDraw.Draw(image)
    draw.ellipse((160, 380, 360, 700), fill=(230, 90, 40))
    draw.ellipse((200, 300, 320, 420), fill=(250, 220, 180))
    return image


def median_ms(work, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    source = picture()
    with tempfile.TemporaryDirectory() as tmp:
        logo = Path(tmp) / "logo.png"
        Image.new("RGBA", (300, 120), (200, 20, 20, 255)).save(logo)
        brand = Brand(logo=logo, footer="达达快送 使命必达")

        def poster() -> None:
            compose_poster(source, COPY, *SIZE, brand=brand)

        def resize() -> None:
            source.resize(SIZE, Image.Resampling.LANCZOS)

        poster()  # warm-up: fonts load once per process
        resize()
        ours, baseline = median_ms(poster, args.rounds), median_ms(resize, args.rounds)
    print(f"resize only:     {baseline:7.1f} ms (median of {args.rounds})")
    print(f"finished poster: {ours:7.1f} ms (median of {args.rounds})")
    verdict = "met" if ours < GOAL_MS else "NOT met"
    print(f"ratio poster / resize: {ours / baseline:.1f}x; goal under {GOAL_MS} ms: {verdict}")


if __name__ == "__main__":
    main()
