"""WebUI "infotext": the generation parameters written into each PNG's `parameters` text chunk.

Format (what WebUI writes and its "PNG Info" tab and metadata readers parse):

    {prompt}
    Negative prompt: {negative}           (line left out when empty)
    Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x768, ...

Values holding `,`, `:` or a newline are written as JSON strings. No torch here.
"""

from __future__ import annotations

import json
import re
from io import BytesIO
from typing import Any

from PIL import Image, PngImagePlugin

PNG_KEY = "parameters"
NEGATIVE_PREFIX = "Negative prompt:"
# A `key: value` pair of the parameter line; a quoted value may hold commas.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(value: Any) -> str:
    text = format_value(value)
    if "," not in text and ":" not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def format_value(value: Any) -> str:
    """Numbers the way WebUI shows them: 7 rather than 7.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def build(prompt: str, negative_prompt: str, params: dict[str, Any]) -> str:
    """The infotext for one image; `params` in WebUI order, None values left out."""
    line = ", ".join(f"{key}: {quote(value)}" for key, value in params.items() if value is not None)
    negative = f"\n{NEGATIVE_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}"


def _unquote(value: str) -> str:
    if value.startswith('"') and value.endswith('"'):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def parse(text: str) -> dict[str, str]:
    """Read an infotext back: `Prompt`, `Negative prompt` and each parameter as text."""
    lines = text.strip().split("\n")
    params: dict[str, str] = {}
    if lines and len(_PARAM.findall(lines[-1])) >= 3:
        params = {k: _unquote(v) for k, v in _PARAM.findall(lines.pop())}
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if line.startswith(NEGATIVE_PREFIX) or negative_lines:
            negative_lines.append(
                line.removeprefix(NEGATIVE_PREFIX).lstrip() if not negative_lines else line
            )
        else:
            prompt_lines.append(line)
    return {
        "Prompt": "\n".join(prompt_lines),
        "Negative prompt": "\n".join(negative_lines),
        **params,
    }


def png_bytes(image: Image.Image, infotext: str) -> bytes:
    """Encode `image` as PNG with the infotext in the `parameters` chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, infotext)
    buffer = BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png(data: bytes) -> str | None:
    """The infotext of a PNG file's bytes, or None when it has none."""
    return read_png_texts(data).get(PNG_KEY)


def read_png_texts(data: bytes) -> dict[str, str]:
    """Every text chunk of a PNG file's bytes (the infotext, a finished poster's `poster` …)."""
    with Image.open(BytesIO(data), formats=["PNG"]) as image:
        return dict(image.text) if hasattr(image, "text") else {}
