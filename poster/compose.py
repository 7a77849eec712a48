"""A chosen picture plus copy → a finished poster of a channel's exact size (pure Pillow + numpy).

`compose_poster` reads top to bottom:
1. check inputs (copy lengths, size, fonts that have every character);
2. fit the picture to the exact size by a crop that keeps the subject (never a stretch);
3. find the subject (saliency) and choose the layout whose text covers the least of it;
4. fit each text to its box (font size by search) and stack the blocks;
5. choose text colour and, where the picture is too busy, a band, so every text reaches 4.5:1;
6. draw the band, the texts, the logo (clear of the title and the subject) and return the
   poster with a description of every element (for the PNG's `poster` chunk and the SVG).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from poster import contrast, fonts, layout
from poster.saliency import Box, mass_in, saliency_map, subject_box
from poster.text import LINE_SPACING, FittedText, fit_text
from posterbot.config import check_copy_length

MAX_SIDE = 10000  # Telegram's photo limit (width + height) is the first to bite anyway
MAX_POSTER_PIXELS = 80_000_000  # an 80x200 cm roll-up at 100 dpi is 25 MP; more is a mistake
WHITE, INK = (255, 255, 255), (26, 26, 26)
BAND_ALPHAS = (0.45, 0.6, 0.75, 0.9, 1.0)  # tried in turn until the text reaches 4.5:1
GAP = 0.35  # between stacked blocks, as a share of the block above's font size
MIN_BOX_PX = 16  # the smallest text box tried; below it a line cannot be read
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Copy:
    """The words on the poster."""

    title: str = ""
    subtitle: str = ""
    cta: str = ""  # call to action or date line


@dataclass(frozen=True)
class Brand:
    """An IP's brand kit ([[ips]] brand in config)."""

    logo: Path | None = None  # PNG with alpha
    logo_corner: str = "auto"  # auto | top-left | top-right | bottom-left | bottom-right
    logo_width: float = 0.18  # share of the poster's width
    colours: tuple[RGB, ...] = ()  # text colour candidates, preferred first
    band_colour: RGB | None = None
    fonts: tuple[str, ...] = ()  # families or font files, tried before the bundled ones
    footer: str = ""  # a fixed line, e.g. the slogan


@dataclass(frozen=True)
class Element:
    """One thing drawn on the poster, in pixels, as the SVG and the `poster` chunk describe it."""

    kind: str  # title | subtitle | cta | footer | band | logo
    box: tuple[int, int, int, int]
    lines: list[str] = field(default_factory=list)
    family: str = ""
    weight: int = 0
    size: int = 0
    colour: str = ""  # #rrggbb
    align: str = "center"
    opacity: float = 1.0
    contrast: float | None = None  # measured on the pixels behind the glyphs


@dataclass
class Poster:
    image: Image.Image  # the finished poster, RGB, exactly the asked size
    picture: Image.Image  # the fitted picture alone (the SVG's background)
    layout: str
    elements: list[Element]
    subject: tuple[int, int, int, int]  # in poster pixels
    source_sha256: str
    logo_png: bytes | None = None

    def metadata(self, copy: Copy) -> dict[str, Any]:
        """What the PNG's `poster` text chunk holds (JSON)."""
        return {
            "copy": asdict(copy),
            "layout": self.layout,
            "size": list(self.image.size),
            "subject": list(self.subject),
            "source_sha256": self.source_sha256,
            "elements": [asdict(element) for element in self.elements],
        }


def _hex(colour: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def check_copy(copy: Copy, footer: str = "") -> None:
    """Refusal (`text_too_long`, naming the field) when a text is too long for a poster."""
    for name, text in (*asdict(copy).items(), ("footer", footer)):
        check_copy_length(name, text)


def fit_picture(
    image: Image.Image, width: int, height: int, subject: Box
) -> tuple[Image.Image, Box]:
    """Crop `image` to the aspect of `width` x `height` keeping the subject's box (centred on it,
    inside the picture), then resize to exactly that size. Returns the picture and the subject's
    box in it (fractions)."""
    source_w, source_h = image.size
    aspect = width / height
    crop_w, crop_h = min(source_w, source_h * aspect), min(source_h, source_w / aspect)
    cx = (subject[0] + subject[2]) / 2 * source_w
    cy = (subject[1] + subject[3]) / 2 * source_h
    x0 = min(max(0.0, cx - crop_w / 2), source_w - crop_w)
    y0 = min(max(0.0, cy - crop_h / 2), source_h - crop_h)
    fitted = image.convert("RGB").resize(
        (width, height), Image.Resampling.LANCZOS, box=(x0, y0, x0 + crop_w, y0 + crop_h)
    )
    moved = (
        min(max((subject[0] * source_w - x0) / crop_w, 0.0), 1.0),
        min(max((subject[1] * source_h - y0) / crop_h, 0.0), 1.0),
        min(max((subject[2] * source_w - x0) / crop_w, 0.0), 1.0),
        min(max((subject[3] * source_h - y0) / crop_h, 0.0), 1.0),
    )
    return fitted, moved


@dataclass(frozen=True)
class _Block:
    kind: str
    fitted: FittedText
    face: fonts.Face


def _blocks(
    texts: list[tuple[str, str, int, float, int]],
    region: layout.Region,
    brand: Brand,
    cap: int | None = None,
) -> list[_Block]:
    """Fit each (kind, text, weight, share of the region's height, max lines) into the region,
    each block at most 60% of the one above (and the first at most `cap` px)."""
    blocks: list[_Block] = []
    for kind, text, weight, share, max_lines in texts:
        if not text.strip():
            continue
        face = fonts.choose_face(text, list(brand.fonts), weight)
        box_height = max(MIN_BOX_PX, round(region.height * share))
        max_size = round(box_height / (1 + LINE_SPACING * (max_lines - 1)))
        if cap:
            max_size = min(max_size, cap)  # a subtitle never outgrows the title above it
        fitted = fit_text(
            text, face.at, region.width, box_height, max_lines=max_lines, max_size=max_size
        )
        blocks.append(_Block(kind, fitted, face))
        cap = round(fitted.size * 0.6)
    return blocks


def _stack(
    blocks: list[_Block], region: layout.Region
) -> list[tuple[_Block, tuple[int, int, int, int]]]:
    """Place the blocks one under another inside the region, aligned as the region says."""
    gaps = [round(b.fitted.size * GAP) for b in blocks[:-1]]
    total = sum(b.fitted.height for b in blocks) + sum(gaps)
    if region.anchor == "top":
        y = region.y0
    elif region.anchor == "bottom":
        y = region.y1 - total
    else:
        y = region.y0 + (region.height - total) // 2
    placed = []
    for i, block in enumerate(blocks):
        if region.align == "center":
            x = region.x0 + (region.width - block.fitted.width) // 2
        else:
            x = region.x0
        placed.append((block, (x, y, x + block.fitted.width, y + block.fitted.height)))
        y += block.fitted.height + (gaps[i] if i < len(gaps) else 0)
    return placed


def _fraction(box: tuple[int, int, int, int], width: int, height: int) -> Box:
    return (box[0] / width, box[1] / height, box[2] / width, box[3] / height)


def _union(boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _draw_lines(draw: ImageDraw.ImageDraw, block: _Block, box, align: str, fill) -> None:
    font = block.face.at(block.fitted.size)
    line_height = round(block.fitted.size * LINE_SPACING)
    for i, line in enumerate(block.fitted.lines):
        y = box[1] + i * line_height
        if align == "center":
            x = (box[0] + box[2]) / 2
            draw.text((x, y), line, font=font, fill=fill, anchor="mt")
        else:
            draw.text((box[0], y), line, font=font, fill=fill, anchor="lt")


def compose_poster(
    picture: Image.Image,
    copy: Copy,
    width: int,
    height: int,
    *,
    brand: Brand = Brand(),
    layout_name: str = "auto",
) -> Poster:
    """The finished poster; ValueError naming the argument for bad input (see module doc)."""
    # 1. check inputs
    check_copy(copy, brand.footer)
    if (
        not (64 <= width <= MAX_SIDE and 64 <= height <= MAX_SIDE)
        or width * height > MAX_POSTER_PIXELS
    ):
        raise ValueError(f"size: {width}x{height} is not a poster size (64 to {MAX_SIDE} a side)")
    if not (copy.title or copy.subtitle or copy.cta or brand.footer):
        raise ValueError("title: a poster needs some text (title, subtitle or call to action)")
    source_sha256 = hashlib.sha256(picture.tobytes()).hexdigest()

    # 2. fit the picture, keeping its subject
    fitted, subject = fit_picture(picture, width, height, subject_box(saliency_map(picture)))

    # 3. + 4. the layout whose text covers the least of the subject
    saliency = saliency_map(fitted)
    plans = layout.candidates(width, height, subject)
    if layout_name != "auto":
        layout.plan(layout_name, width, height)  # ValueError for an unknown or unfit layout
        plans = [candidate for candidate in plans if candidate.name == layout_name]
    title_texts = [
        ("title", copy.title, fonts.TITLE_WEIGHT, 0.68, 2),
        ("subtitle", copy.subtitle, fonts.TEXT_WEIGHT, 0.30, 2),
    ]
    small_texts = [
        ("cta", copy.cta, fonts.TEXT_WEIGHT, 0.55, 1),
        ("footer", brand.footer, fonts.TEXT_WEIGHT, 0.40, 1),
    ]
    best = None
    for candidate in plans:
        placed = _stack(_blocks(title_texts, candidate.title, brand), candidate.title)
        small_cap = round(min(b.fitted.size for b, _ in placed) * 0.8) if placed else None
        placed_small = _stack(
            _blocks(small_texts, candidate.small, brand, small_cap), candidate.small
        )
        text_box = _fraction(_union([box for _, box in placed]), width, height) if placed else None
        score = layout.score(text_box, saliency, subject) if text_box else 0.0
        if best is None or score < best[0]:
            best = (score, candidate, placed, placed_small)
    _, chosen, placed, placed_small = best

    # 5. + 6. legible colours, band, text, logo
    image = fitted.copy()
    pixels = np.asarray(fitted, np.uint8)
    elements: list[Element] = []
    # On a band, the title block and the small lines share one band to the bottom edge.
    groups = (
        [(placed + placed_small, chosen.title, True)]
        if chosen.band
        else [
            (placed, chosen.title, False),
            (placed_small, chosen.small, False),
        ]
    )
    for group, region, on_band in groups:
        if group:
            image, group_elements = _draw_group(image, pixels, group, region, brand, on_band)
            elements += group_elements
    logo_png = None
    if brand.logo:
        image, logo_element, logo_png = _place_logo(image, brand, saliency, elements)
        elements.append(logo_element)
    subject_px = (
        round(subject[0] * width),
        round(subject[1] * height),
        round(subject[2] * width),
        round(subject[3] * height),
    )
    return Poster(image, fitted, chosen.name, elements, subject_px, source_sha256, logo_png)


def _draw_group(image, pixels, group, region: layout.Region, brand: Brand, on_band: bool):
    """Draw stacked texts legibly: plain if a colour reaches 4.5:1 on the picture, else on a
    band made more opaque until it does. Contrast is measured on the pixels under the glyphs."""
    under = [_pixels_under_glyphs(pixels, block, box, region.align) for block, box in group]
    candidates = [*brand.colours, WHITE, INK]
    band_box = _band_box(group, region, image.size, full_width=on_band)
    # The brand's band first; a dark band under light text reads on any picture, so it is the
    # last resort (opaque INK under white is 17:1).
    bands = [(INK, alpha) for alpha in BAND_ALPHAS]
    if brand.band_colour:
        bands = [(brand.band_colour, alpha) for alpha in BAND_ALPHAS] + bands
    for band_colour, alpha in [(INK, 0.0)] * (not on_band) + bands:
        # The band covers every glyph of the group, so what lies under a glyph is a blend.
        behind = [p * (1 - alpha) + np.array(band_colour, np.float64) * alpha for p in under]
        per_block = [contrast.covered_contrasts(candidates, b) for b in behind]
        worst = [min(reached) for reached in zip(*per_block, strict=True)]
        best = int(np.argmax(worst))
        if worst[best] >= contrast.WCAG_TEXT:
            break
    colour = candidates[best]
    elements = []
    if alpha > 0:
        image = Image.fromarray(_with_band(np.asarray(image), band_box, band_colour, alpha))
        elements.append(Element("band", band_box, colour=_hex(band_colour), opacity=alpha))
    draw = ImageDraw.Draw(image)
    for (block, box), reached in zip(group, per_block, strict=True):
        _draw_lines(draw, block, box, region.align, colour)
        elements.append(
            Element(
                block.kind,
                box,
                block.fitted.lines,
                block.face.family,
                block.face.weight,
                block.fitted.size,
                _hex(colour),
                region.align,
                contrast=round(reached[best], 2),
            )
        )
    return image, elements


def _pixels_under_glyphs(pixels: np.ndarray, block: _Block, box, align: str) -> np.ndarray:
    """The (N, 3) picture pixels the block's glyphs will cover, drawn in a mask around its box."""
    pad = block.fitted.size // 2
    x0, y0 = max(0, box[0] - pad), max(0, box[1] - pad)
    x1, y1 = min(pixels.shape[1], box[2] + pad), min(pixels.shape[0], box[3] + pad)
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    shifted = (box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0)
    _draw_lines(ImageDraw.Draw(mask), block, shifted, align, 255)
    return pixels[y0:y1, x0:x1][np.asarray(mask) > 127].astype(np.float64)


def _band_box(group, region: layout.Region, size: tuple[int, int], full_width: bool):
    box = _union([b for _, b in group])
    pad = round(0.6 * max(block.fitted.size for block, _ in group) * GAP) + 8
    if full_width:
        return (0, max(0, box[1] - pad), size[0], size[1])
    return (
        max(0, box[0] - pad),
        max(0, box[1] - pad),
        min(size[0], box[2] + pad),
        min(size[1], box[3] + pad),
    )


def _with_band(pixels: np.ndarray, box, colour: RGB, alpha: float) -> np.ndarray:
    out = pixels.astype(np.float32).copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - alpha) + np.array(colour, np.float32) * alpha
    return out.round().astype(np.uint8)


def _place_logo(image: Image.Image, brand: Brand, saliency: np.ndarray, elements: list[Element]):
    """The logo at a corner, scaled to its share of the width, clear of the texts and the
    subject: the free corner with the least saliency (or the brand's fixed corner)."""
    logo = Image.open(brand.logo)
    logo.load()
    logo = logo.convert("RGBA")
    width, height = image.size
    logo_w = max(16, round(brand.logo_width * width))
    logo_h = max(1, round(logo.height * logo_w / logo.width))
    logo = logo.resize((logo_w, logo_h), Image.Resampling.LANCZOS)
    m = round(layout.MARGIN * min(width, height) / 2)
    corners = {
        "top-left": (m, m),
        "top-right": (width - m - logo_w, m),
        "bottom-left": (m, height - m - logo_h),
        "bottom-right": (width - m - logo_w, height - m - logo_h),
    }
    if brand.logo_corner != "auto":
        if brand.logo_corner not in corners:
            raise ValueError(f"logo_corner: must be auto or one of {', '.join(corners)}")
        order = [brand.logo_corner]
    else:
        texts = [e.box for e in elements if e.kind != "band"]

        def cost(corner: str) -> float:
            x, y = corners[corner]
            box = _fraction((x, y, x + logo_w, y + logo_h), width, height)
            clash = any(layout.overlap(box, _fraction(t, width, height)) > 0 for t in texts)
            return mass_in(saliency, box) + (10.0 if clash else 0.0)

        order = sorted(corners, key=cost)
    x, y = corners[order[0]]
    canvas = image.convert("RGBA")
    canvas.alpha_composite(logo, (x, y))
    buffer = BytesIO()
    logo.save(buffer, "PNG")
    element = Element("logo", (x, y, x + logo_w, y + logo_h))
    return canvas.convert("RGB"), element, buffer.getvalue()
