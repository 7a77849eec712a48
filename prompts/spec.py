"""The structured prompt: what a chat request becomes, and how it renders as a WebUI prompt.

Designers wrote prompts in one shape (the article in seeds/): the IP's trigger word first, then a
natural-language English sentence, then English tags, then the LoRA. Earlier words weigh more, so
the order is part of the format. `PosterPrompt.to_dict()` is the JSON of `posterbot prompt --json`
(documented in docs/prompts.md).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from posterbot.config import GenerationSettings
from posterbot.errors import Refusal
from prompts.notes import Note
from prompts.syntax import LoraTag

# Sampler names as WebUI shows them; the engine maps each to a diffusers scheduler.
SAMPLER_NAMES = (
    "Euler a",
    "Euler",
    "DDIM",
    "LMS",
    "LMS Karras",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM2 Karras",
    "DPM2 a Karras",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ SDE",
    "DPM++ SDE Karras",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "UniPC",
    "LCM",
    "PLMS",
    "DDPM",
    "Euler Karras",
    "Heun Karras",
    "DPM++ 3M SDE",
    "DPM++ 3M SDE Karras",
)
# Names WebUI users type that diffusers has no scheduler for, refused with the reason.
UNSUPPORTED_SAMPLERS = {
    "DPM++ 2S a": "diffusers has no DPM++ 2S ancestral sampler",
    "DPM++ 2S a Karras": "diffusers has no DPM++ 2S ancestral sampler",
    "DPM fast": "diffusers has no DPM fast sampler",
    "DPM adaptive": "diffusers has no DPM adaptive sampler",
}
SOURCES = ("template", "llm")
_PIXEL_SIZE = re.compile(
    r"([1-9]\d{0,4})\s*[x×*]\s*([1-9]\d{0,4})(?:\s*@\s*([1-9]\d{0,3})\s*(?:dpi)?)?", re.I
)
RANDOM_SEED = -1  # WebUI's "pick a new seed"
MAX_SEED = 2**32 - 1  # WebUI seeds are unsigned 32-bit


def check_sampler(name: str, argument: str = "sampler_name") -> str:
    """The WebUI spelling of `name` (any case); ValueError listing the valid names if unknown."""
    for sampler in SAMPLER_NAMES:
        if sampler.lower() == name.strip().lower():
            return sampler
    why = UNSUPPORTED_SAMPLERS.get(name.strip(), "unknown sampler")
    valid = ", ".join(SAMPLER_NAMES)
    raise Refusal(argument, f"{why} {name!r}; valid: {valid}", "unknown_sampler", name=name)


def render_prompt(
    trigger: str,
    natural_language: str,
    tags: list[str],
    lora: LoraTag | None,
    extra_loras: tuple[LoraTag, ...] | list[LoraTag] = (),
) -> str:
    """`trigger, sentence, tag, tag, ..., <lora:name:w>` with empty parts left out; a second
    mascot's LoRA (`extra_loras`) follows the first."""
    loras = [tag.render() for tag in (lora, *extra_loras) if tag]
    parts = [trigger, natural_language, *tags, *loras]
    return ", ".join(part for part in parts if part)


@dataclass(frozen=True)
class Target:
    """A finished size asked for: a channel (小红书 1242x1660), a typed `WxH` or a ratio (`3:4`).

    `dpi` is set for print sizes only (易拉宝, A4 ...): the poster PNG carries it, so a print
    shop reads the physical size from the file.
    """

    name: str
    width: int
    height: int
    dpi: int | None = None

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"size: {self.width}x{self.height} must be positive")
        if self.dpi is not None and self.dpi <= 0:
            raise ValueError(f"dpi: {self.dpi} must be positive")

    @classmethod
    def parse(cls, text: str, name: str = "") -> Target | None:
        """`1080x1920` or `3150x7874@100` (`×`, `*` too) as a Target named `name` (default: the
        size as written here); None when `text` is not in that form."""
        match = _PIXEL_SIZE.fullmatch(text.strip())
        if not match:
            return None
        width, height = int(match.group(1)), int(match.group(2))
        dpi = int(match.group(3)) if match.group(3) else None
        return cls(name or f"{width}x{height}" + (f"@{dpi}" if dpi else ""), width, height, dpi)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class PosterPrompt(GenerationSettings):
    """A request turned into everything a txt2img call needs, plus the poster's text.

    The generation settings (WebUI names) are inherited; `negative_prompt` among them is final.
    """

    ip: str  # the IP's config name ("" for a raw prompt naming no known IP)
    trigger: str  # the trigger word; "dadaknight, joydog" when two mascots share the poster
    natural_language: str
    tags: list[str]
    lora: LoraTag | None
    prompt: str  # the rendered WebUI prompt, sent as-is to the engine
    title: str = ""
    subtitle: str = ""
    cta: str = ""  # the call to action or date line (按钮「立即下单」), laid out like the title
    source: str = "template"
    # The finished sizes asked for, in the order named (the first is the main one and gave the
    # generation size its shape): the poster step fits the picture to each. Empty = the
    # generation size (or hires of it) is final.
    targets: list[Target] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)  # what was guessed, dropped or untranslated
    extra_loras: list[LoraTag] = field(default_factory=list)  # the other mascots', after `lora`

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source: must be one of {SOURCES}, not {self.source!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape documented in docs/prompts.md."""
        data = asdict(self)
        data["lora"] = {"name": self.lora.name, "weight": self.lora.weight} if self.lora else None
        data["extra_loras"] = [{"name": tag.name, "weight": tag.weight} for tag in self.extra_loras]
        data["notes"] = [note.to_dict() for note in self.notes]
        return data

    def to_txt2img(self) -> dict[str, Any]:
        """The WebUI `/sdapi/v1/txt2img` request of this prompt: the prompt and every setting."""
        return {"prompt": self.prompt, **self.settings()}
