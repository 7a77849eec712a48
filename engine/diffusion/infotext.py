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
import struct
import zlib
from io import BytesIO
from typing import Any

from PIL import Image, PngImagePlugin

from posterbot.errors import Refusal

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


def png_bytes(image: Image.Image, infotext: str, key: str = PNG_KEY) -> bytes:
    """Encode `image` as PNG with the infotext in the `parameters` chunk (or `key`'s)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(key, infotext)
    buffer = BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_png(data: bytes) -> str | None:
    """The infotext of a PNG file's bytes, or None when it has none."""
    return read_png_texts(data).get(PNG_KEY)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT_CHUNK = 2**20  # as Pillow's PngImagePlugin.MAX_TEXT_CHUNK: an infotext is a few KB


def read_png_texts(data: bytes) -> dict[str, str]:
    """Every text chunk of a PNG file's bytes (the infotext, a finished poster's `poster` …).

    Read chunk by chunk (tEXt, zTXt, iTXt wherever they are): the pixels are never decoded, so a
    decompression bomb costs nothing here; its header is still refused past Pillow's
    `MAX_IMAGE_PIXELS`, as every reader that decodes it would. Refusal naming `image`.
    """
    if not data.startswith(PNG_SIGNATURE):
        raise Refusal("image", "not a PNG file")
    texts: dict[str, str] = {}
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        if len(body) < length:
            raise Refusal("image", f"truncated PNG ({kind!r} chunk)")
        if offset == len(PNG_SIGNATURE) and kind != b"IHDR":
            raise Refusal("image", "not a PNG file (no IHDR header first)")
        offset += length + 12  # length, type, data, CRC
        if kind == b"IHDR":
            _check_png_size(body)
        elif kind in (b"tEXt", b"zTXt", b"iTXt"):
            key, text = _png_text(kind, body)
            texts[key] = text
        elif kind == b"IEND":
            break
    return texts


def _check_png_size(header: bytes) -> None:
    width, height = struct.unpack(">II", header[:8]) if len(header) >= 8 else (0, 0)
    limit = Image.MAX_IMAGE_PIXELS or 0
    if limit and width * height > limit:
        raise Refusal(
            "image",
            f"{width}x{height} is over {limit} pixels (a decompression bomb)",
            "size_too_large",
            width=width,
            height=height,
        )


def _png_text(kind: bytes, body: bytes) -> tuple[str, str]:
    """A text chunk's keyword and text (zTXt and compressed iTXt inflated, at most 1 MB)."""
    key, _, rest = body.partition(b"\0")
    if kind == b"tEXt":
        return key.decode("latin-1"), rest.decode("latin-1")
    if kind == b"zTXt":
        return key.decode("latin-1"), _inflate(rest[1:]).decode("latin-1")
    compressed, rest = rest[:1] == b"\1", rest[2:]  # compression flag, method
    _language, _, rest = rest.partition(b"\0")
    _translated, _, text = rest.partition(b"\0")
    text = _inflate(text) if compressed else text
    return key.decode("latin-1"), text.decode("utf-8", "replace")


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(data, MAX_TEXT_CHUNK)
    except zlib.error as exc:
        raise Refusal("image", f"damaged PNG text chunk ({exc})") from None
    if inflater.unconsumed_tail:
        raise Refusal("image", f"a PNG text chunk inflates past {MAX_TEXT_CHUNK} bytes")
    return text
