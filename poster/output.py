"""A finished poster as files: the PNG (infotext + `poster` chunk, dpi for print) and an SVG
a designer can open in Figma or Illustrator and edit word by word."""

from __future__ import annotations

import base64
import json
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from PIL import Image, PngImagePlugin

from poster.compose import Copy, Poster
from poster.text import LINE_SPACING

POSTER_KEY = "poster"  # the PNG text chunk with the copy, layout, fonts and colours (JSON)
PARAMETERS_KEY = "parameters"  # WebUI's infotext chunk, kept from the source picture


def png_bytes(poster: Poster, copy: Copy, parameters: str = "", dpi: int | None = None) -> bytes:
    """The poster as PNG with the picture's infotext and the `poster` chunk; `dpi` for print."""
    info = PngImagePlugin.PngInfo()
    if parameters:
        info.add_text(PARAMETERS_KEY, parameters)
    info.add_itxt(POSTER_KEY, json.dumps(poster.metadata(copy), ensure_ascii=False))
    buffer = BytesIO()
    extra: dict[str, Any] = {"dpi": (dpi, dpi)} if dpi else {}
    poster.image.save(buffer, "PNG", pnginfo=info, **extra)
    return buffer.getvalue()


def read_poster_chunk(data: bytes) -> dict[str, Any] | None:
    """The `poster` chunk of a PNG made by `png_bytes`, or None."""
    with Image.open(BytesIO(data), formats=["PNG"]) as image:
        text = image.text.get(POSTER_KEY)  # type: ignore[attr-defined]
    return json.loads(text) if text else None


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def svg_text(poster: Poster) -> str:
    """The poster as SVG: the picture as an embedded image, then the band, every text as a
    <text> element (one <tspan> a line, font family and weight named) and the logo."""
    width, height = poster.image.size
    picture = BytesIO()
    poster.picture.save(picture, "PNG")
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<image id="picture" x="0" y="0" width="{width}" height="{height}" '
        f'href="{_data_uri(picture.getvalue())}"/>',
    ]
    for index, element in enumerate(poster.elements):
        x0, y0, x1, y1 = element.box
        if element.kind == "band":
            parts.append(
                f'<rect id="band-{index}" x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" '
                f'fill="{element.colour}" fill-opacity="{element.opacity:.2f}"/>'
            )
        elif element.kind == "logo" and poster.logo_png:
            parts.append(
                f'<image id="logo" x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" '
                f'href="{_data_uri(poster.logo_png)}"/>'
            )
        elif element.lines:
            anchor = "middle" if element.align == "center" else "start"
            x = (x0 + x1) / 2 if element.align == "center" else x0
            line_height = round(element.size * LINE_SPACING)
            spans = "".join(
                f'<tspan x="{x:g}" y="{y0 + i * line_height}">{escape(line)}</tspan>'
                for i, line in enumerate(element.lines)
            )
            parts.append(
                f'<text id="{element.kind}" font-family={quoteattr(element.family)} '
                f'font-weight="{element.weight}" font-size="{element.size}" '
                f'fill="{element.colour}" text-anchor="{anchor}" '
                f'dominant-baseline="text-before-edge">{spans}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts)
