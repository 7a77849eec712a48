"""WCAG 2 contrast, measured on the pixels a text actually sits on.

relative luminance L = 0.2126 R + 0.7152 G + 0.0722 B of linearised sRGB; ratio = (L1 + 0.05) /
(L2 + 0.05). Body text needs 4.5:1. A busy picture has many colours behind one title, so the
ratio that counts is the one that 95% of the covered pixels reach.
"""

from __future__ import annotations

import numpy as np

WCAG_TEXT = 4.5  # WCAG 2 AA for normal text; posters are read at a glance, so every text gets it
COVERED_SHARE = 0.95  # the ratio must hold on this share of the pixels behind the glyphs

RGB = tuple[int, int, int]


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Relative luminance of sRGB values 0..255 (any shape ending in 3)."""
    c = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return linear @ np.array([0.2126, 0.7152, 0.0722])


def ratio(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    light, dark = np.maximum(a, b), np.minimum(a, b)
    return (light + 0.05) / (dark + 0.05)


def covered_contrasts(colours: list[RGB], behind: np.ndarray) -> list[float]:
    """For each text colour, the contrast it reaches against 95% of the (N, 3) pixels behind."""
    if len(behind) == 0:
        return [float("inf")] * len(colours)
    background = luminance(behind)
    return [
        float(np.quantile(ratio(luminance(np.array(colour)), background), 1.0 - COVERED_SHARE))
        for colour in colours
    ]


def covered_contrast(colour: RGB, behind: np.ndarray) -> float:
    """The contrast `colour` reaches against 95% of the (N, 3) pixels behind it."""
    return covered_contrasts([colour], behind)[0]
