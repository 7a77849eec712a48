"""Image sizes: Stable Diffusion generates in multiples of 64; posters come in any size."""

from __future__ import annotations

import math
import re

from posterbot.errors import Refusal
from prompts.lexicon import Glossary, load_glossary
from prompts.spec import Target

# The VAE shrinks the image 8x and the UNet halves that three more times, so sides that are
# multiples of 64 avoid padding and cropping (kohya buckets and WebUI users round to 64 as well).
SIZE_MULTIPLE = 64
PORTRAIT_RATIO = 1.5  # 2:3, the designers' usual 512x768
# A typed ratio (3:4) becomes a size with this short side: phone screens and most channels have it.
RATIO_SHORT_SIDE = 1080
_RATIO = re.compile(r"([1-9]\d?)\s*[:：]\s*([1-9]\d?)")


def round_to_multiple(value: float) -> int:
    """The nearest multiple of 64, at least 64."""
    return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def orientation_size(orientation: str, width: int, height: int) -> tuple[int, int]:
    """Give the size (width, height) a `portrait`, `landscape` or `square` shape, keeping its
    short side: 512x768 -> landscape 768x512, square 512x512."""
    short = min(width, height)
    long = round_to_multiple(short * PORTRAIT_RATIO)
    shapes = {"portrait": (short, long), "landscape": (long, short), "square": (short, short)}
    if orientation not in shapes:
        raise ValueError(f"orientation: must be one of {sorted(shapes)}, not {orientation!r}")
    return shapes[orientation]


def generation_size(final_width: int, final_height: int, max_area: int) -> tuple[int, int]:
    """The 64-multiple size to generate a `final_width` x `final_height` image at.

    Models make their best images near the area they were trained at (`max_area`, the default
    size's area), so a larger final size keeps its shape but is generated at about that area and
    resized afterwards: 1080x1920 at 512x768's area -> 512x896.
    """
    if final_width <= 0 or final_height <= 0:
        raise ValueError(f"size: {final_width}x{final_height} must be positive")
    scale = min(1.0, math.sqrt(max_area / (final_width * final_height)))
    return round_to_multiple(final_width * scale), round_to_multiple(final_height * scale)


def orientation_of(width: int, height: int) -> str:
    """`portrait`, `landscape` or `square`: the orientation word a size agrees with."""
    return "portrait" if height > width else "landscape" if width > height else "square"


def ratio_target(width: int, height: int) -> Target:
    """A typed ratio as a finished size with a 1080 short side: 3:4 -> 1080x1440."""
    if width <= 0 or height <= 0:
        raise ValueError(f"size: {width}:{height} must be positive")
    scale = RATIO_SHORT_SIDE / min(width, height)
    return Target(f"{width}:{height}", round(width * scale), round(height * scale))


def channel_target(text: str, glossary: Glossary | None = None) -> Target:
    """The finished size `text` names: a channel or alias (小红书, 头图), `WxH`, `WxH@DPI` or `W:H`.

    Raises Refusal `size_unknown` naming the text (the CLI's `--size`, a size button's value).
    """
    glossary = glossary or load_glossary()
    if channel := glossary.channels.get(text.strip().lower()):
        return channel
    if target := Target.parse(text):
        return target
    if match := _RATIO.fullmatch(text.strip()):
        return ratio_target(int(match.group(1)), int(match.group(2)))
    names = ", ".join(channel_names(glossary))
    raise Refusal(
        "size",
        f"{text!r} is not a channel ({names}), WIDTHxHEIGHT, WIDTHxHEIGHT@DPI or W:H",
        "size_unknown",
        size=text,
    )


def channel_names(glossary: Glossary | None = None) -> list[str]:
    """The channels' own names (no aliases), in the glossary's order: for help and keyboards."""
    glossary = glossary or load_glossary()
    return [
        target.name for word, target in glossary.channels.items() if word == target.name.lower()
    ]
