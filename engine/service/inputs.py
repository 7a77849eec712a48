"""Pictures a request brings in (img2img init images, inpainting masks, ControlNet inputs, images
to upscale): checked once at submission, then kept by content hash until a worker reads them.

A picture arrives as base64 (a `data:` URI prefix allowed, as WebUI clients send), or on `/v1/jobs`
as `{"output": "<path of one of our results>"}`. `store_picture` decodes it the safe way (header
first: size and format are checked before any pixel is decoded; Pillow's decompression-bomb guard
as an error; a truncated file fails the full decode) and writes it as a metadata-free PNG under
`inputs/<sha256>.png`; the job carries `"input:<sha256>"` and the worker opens it with
`open_picture`. The same picture sent twice is stored once. With a queue shared by hosts the
picture travels through it to workers elsewhere (`shared_files.py`). No torch here: the service
runs this.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import warnings
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from engine.service.shared_files import ensure_output, fetch_input, share_input
from posterbot.config import Config
from posterbot.errors import Refusal
from posterbot.files import atomic_path

MAX_PICTURE_PIXELS = 40_000_000  # a 48 MP phone photo fits; past this the header is refused
PICTURE_FORMATS = ["PNG", "JPEG", "WEBP"]  # what phones, WebUI and Telegram send (no GIF: bombs)
INPUT_PREFIX = "input:"
_INPUT_REF = re.compile(r"input:[0-9a-f]{64}")


def decode_base64(text: Any, field: str) -> bytes:
    """The bytes of a base64 picture from a JSON body (a `data:` URI prefix allowed)."""
    if not isinstance(text, str) or not text:
        raise Refusal(field, "must be a base64 PNG, JPEG or WEBP picture")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refusal(field, "is not valid base64") from None


def decode_picture(data: bytes, field: str, mode: str = "RGB") -> Image.Image:
    """A sane picture from `data`, upright (EXIF orientation applied), in `mode`; a Refusal
    naming `field` for anything else (not a picture, too many pixels, a bomb, truncated)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(BytesIO(data), formats=PICTURE_FORMATS) as image:
                if image.width * image.height > MAX_PICTURE_PIXELS:
                    size = f"{image.width}x{image.height}"
                    limit = f"{MAX_PICTURE_PIXELS:,}"
                    raise Refusal(
                        field, f"{size} is too many pixels (limit {limit})", "too_many_pixels"
                    )
                image.load()  # the full decode: a truncated file fails here
                upright = ImageOps.exif_transpose(image)
                if mode == "RGB" and upright.mode in ("RGBA", "LA", "P"):
                    rgba = upright.convert("RGBA")  # a cut-out on transparency: onto white
                    flat = Image.new("RGB", rgba.size, (255, 255, 255))
                    flat.paste(rgba, mask=rgba.getchannel("A"))
                    return flat
                return upright.convert(mode)
    except Refusal:
        raise
    except UnidentifiedImageError:
        raise Refusal(field, "is not a PNG, JPEG or WEBP picture", "not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Refusal(
            field, "declares far too many pixels (a decompression bomb)", "too_many_pixels"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise Refusal(field, f"is damaged or truncated ({exc})", "damaged_image") from None


def store_picture(config: Config, value: Any, field: str, mode: str = "RGB") -> str:
    """Check a picture from a request and keep it; returns its `input:<sha256>` reference.

    `value` is base64, `{"output": path}` (one of our results), or a reference this function
    returned before (a request checked twice, e.g. a retry)."""
    if isinstance(value, str) and _INPUT_REF.fullmatch(value):
        path = picture_path(config, value)
        if not path.is_file():
            raise Refusal(field, f"no stored picture {value}")
        share_input(config, path)  # renewed for the workers of other hosts
        return value
    if isinstance(value, dict) and set(value) == {"output"}:
        data = read_output(config, value["output"], field)
    else:
        data = decode_base64(value, field)
    picture = decode_picture(data, field, mode)
    buffer = BytesIO()
    picture.save(buffer, format="PNG")  # no pnginfo or exif passed: metadata is dropped
    png = buffer.getvalue()
    reference = INPUT_PREFIX + hashlib.sha256(png).hexdigest()
    path = picture_path(config, reference)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as scratch:
            scratch.write_bytes(png)
    share_input(config, path)
    return reference


def read_output(config: Config, relative: Any, field: str) -> bytes:
    """The PNG of one of our results, by its path under the outputs folder."""
    ensure_output(config, str(relative))  # a remote worker's, perhaps not collected yet
    root = config.outputs_dir.resolve()
    path = (root / str(relative)).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() != ".png" or not path.is_file():
        raise Refusal(field, f"no output {relative!r}")
    return path.read_bytes()


def picture_path(config: Config, reference: str) -> Path:
    if not _INPUT_REF.fullmatch(reference):
        raise ValueError(f"not a stored picture reference: {reference!r}")
    return config.inputs_dir / f"{reference.removeprefix(INPUT_PREFIX)}.png"


def picture_size(config: Config, reference: str) -> tuple[int, int]:
    """Width and height of a stored picture, from its header."""
    with Image.open(picture_path(config, reference), formats=["PNG"]) as image:
        return image.size


def open_picture(config: Config, reference: str) -> Image.Image:
    """A stored picture, decoded (the worker's side); a worker on another host than the
    service's fetches it from the shared queue first (`Failure` `input_missing` if gone)."""
    path = picture_path(config, reference)
    if not path.is_file():
        fetch_input(config, path)
    with Image.open(path, formats=["PNG"]) as image:
        image.load()
        return image.copy()
