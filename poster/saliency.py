"""Where the picture's subject is: a saliency map in a few lines of numpy, and its box.

Three cues, averaged: the spectral residual (Hou & Zhang 2007: what stands out of the image's
average spectrum), edge density (the mascot has detail, a sky does not) and distance from the
border colour (posters put the subject in front of a background that reaches the edges).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MAP_SIDE = 128  # the long side the map is computed at; layout decisions need no more
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of width and height


def _box_blur(values: np.ndarray, radius: int) -> np.ndarray:
    """A separable box blur (edges extended), twice: close to a Gaussian, no scipy needed."""
    out = values
    for _ in range(2):
        for axis in (0, 1):
            padded = np.pad(
                out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], "edge"
            )
            sums = np.cumsum(padded, axis=axis, dtype=np.float64)
            zero = np.zeros_like(np.take(sums, [0], axis=axis))
            sums = np.concatenate([zero, sums], axis=axis)
            size = 2 * radius + 1
            n = out.shape[axis]
            out = (
                np.take(sums, range(size, size + n), axis=axis) - np.take(sums, range(n), axis=axis)
            ) / size
    return out


def _normalise(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def saliency_map(image: Image.Image) -> np.ndarray:
    """A (h, w) map in 0..1 at MAP_SIDE on the long side; high where the subject is."""
    scale = MAP_SIDE / max(image.size)
    size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
    factor = max(1, max(image.size) // (2 * MAP_SIDE))  # a box reduce first: fast on big posters
    small = image.convert("RGB").reduce(factor).resize(size, Image.Resampling.BILINEAR)
    rgb = np.asarray(small, np.float64)
    gray = rgb.mean(axis=2)
    # 1. spectral residual
    spectrum = np.fft.fft2(gray)
    log_amplitude = np.log(np.abs(spectrum) + 1e-9)
    residual = log_amplitude - _box_blur(log_amplitude, 1)
    spectral = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
    # 2. edge density
    dy, dx = np.gradient(gray)
    edges = np.hypot(dx, dy)
    # 3. distance from the border's colour
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    distinct = np.linalg.norm(rgb - np.median(border, axis=0), axis=2)
    radius = max(1, round(min(size) / 32))
    cues = [_normalise(_box_blur(cue, radius)) for cue in (spectral, edges, distinct)]
    return _normalise(sum(cues) / len(cues))


def subject_box(saliency: np.ndarray) -> Box:
    """The box around the salient pixels (above the mean plus one deviation), trimmed to the
    central 96% of their mass so a stray bright corner does not stretch it."""
    threshold = max(float(saliency.mean() + saliency.std()), 0.35)
    mask = saliency >= threshold
    if not mask.any():
        return (0.25, 0.25, 0.75, 0.75)
    weights = np.where(mask, saliency, 0.0)
    height, width = saliency.shape

    def span(profile: np.ndarray, length: int) -> tuple[float, float]:
        cumulative = np.cumsum(profile) / profile.sum()
        start = int(np.searchsorted(cumulative, 0.02))
        end = int(np.searchsorted(cumulative, 0.98)) + 1
        return start / length, min(end, length) / length

    x0, x1 = span(weights.sum(axis=0), width)
    y0, y1 = span(weights.sum(axis=1), height)
    return (x0, y0, x1, y1)


def mass_in(saliency: np.ndarray, box: Box) -> float:
    """The share of the map's total saliency inside `box` (fractions), 0..1."""
    height, width = saliency.shape
    x0, y0, x1, y1 = box
    inside = saliency[
        int(y0 * height) : max(int(y0 * height) + 1, round(y1 * height)),
        int(x0 * width) : max(int(x0 * width) + 1, round(x1 * width)),
    ]
    total = float(saliency.sum())
    return float(inside.sum()) / total if total else 0.0
