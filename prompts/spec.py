"""The structured prompt: what a chat request becomes, and how it renders as a WebUI prompt.

Designers wrote prompts in one shape (the article in seeds/): the IP's trigger word first, then a
natural-language English sentence, then English tags, then the LoRA. Earlier words weigh more, so
the order is part of the format. `PosterPrompt.to_dict()` is the JSON of `posterbot prompt --json`
(documented in docs/prompts.md).
"""

from __future__ import annotations

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
)
# Names WebUI users type that diffusers has no scheduler for, refused with the reason.
UNSUPPORTED_SAMPLERS = {
    "DPM++ 2S a": "diffusers has no DPM++ 2S ancestral sampler",
    "DPM++ 2S a Karras": "diffusers has no DPM++ 2S ancestral sampler",
    "DPM fast": "diffusers has no DPM fast sampler",
    "DPM adaptive": "diffusers has no DPM adaptive sampler",
}
SOURCES = ("template", "llm")
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
    trigger: str, natural_language: str, tags: list[str], lora: LoraTag | None
) -> str:
    """`trigger, sentence, tag, tag, ..., <lora:name:w>` with empty parts left out."""
    parts = [trigger, natural_language, *tags, lora.render() if lora else ""]
    return ", ".join(part for part in parts if part)


@dataclass(frozen=True, kw_only=True)
class PosterPrompt(GenerationSettings):
    """A request turned into everything a txt2img call needs, plus the poster's text.

    The generation settings (WebUI names) are inherited; `negative_prompt` among them is final.
    """

    ip: str  # the IP's config name ("" for a raw prompt naming no known IP)
    trigger: str
    natural_language: str
    tags: list[str]
    lora: LoraTag | None
    prompt: str  # the rendered WebUI prompt, sent as-is to the engine
    title: str = ""
    subtitle: str = ""
    source: str = "template"
    # The size the user asked for when it is not a generation size (1080x1920): the engine
    # resizes the finished image to it. None = the generation size (or hires of it) is final.
    target_width: int | None = None
    target_height: int | None = None
    notes: list[Note] = field(default_factory=list)  # what was guessed, dropped or untranslated

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source: must be one of {SOURCES}, not {self.source!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape documented in docs/prompts.md."""
        data = asdict(self)
        data["lora"] = {"name": self.lora.name, "weight": self.lora.weight} if self.lora else None
        data["notes"] = [note.to_dict() for note in self.notes]
        return data

    def to_txt2img(self) -> dict[str, Any]:
        """The WebUI `/sdapi/v1/txt2img` request of this prompt: the prompt and every setting."""
        return {"prompt": self.prompt, **self.settings()}
