"""Per-user generation settings (/settings, /seed, /template): pure data and choices.

A user's settings become the `template` layer of `prompts.build_prompt` (request > user's
settings > IP > [generation]), plus what a template cannot say: how many candidates, the LoRA
weight, and whether choosing a candidate renders it in HD straight away.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from posterbot.config import Config, Preset
from prompts.lexicon import load_glossary
from prompts.sizes import orientation_size

# What the /settings keyboard offers for each setting (values as stored; "" = back to default).
CHOICES: dict[str, list[str]] = {
    "sampler_name": ["", "Euler a", "DPM++ 2M Karras", "DPM++ SDE Karras", "DDIM", "UniPC"],
    "steps": ["", "15", "20", "25", "30", "40"],
    "cfg_scale": ["", "5", "6", "7", "8", "10"],
    "size": ["", "portrait", "square", "landscape"],
    "count": ["", "1", "2", "4", "6", "8"],
    "lora_weight": ["", "0.6", "0.7", "0.8", "0.9", "1.0"],
    "style": ["", "3D", "插画", "扁平插画", "国潮", "水彩", "黏土", "盲盒", "像素"],
    "negative": ["", "strict", "none"],
    "hd": ["off", "on"],
}
# Negative prompt presets; "" keeps the IP's own negative prompt.
NEGATIVE_PRESETS = {
    "strict": (
        "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, cropped, "
        "worst quality, low quality, jpeg artifacts, signature, watermark, username, blurry, "
        "deformed, extra limbs"
    ),
    "none": "",
}


@dataclass(frozen=True)
class UserSettings:
    """None = not set (the next layer decides)."""

    sampler_name: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    size: str | None = None  # portrait | square | landscape
    count: int | None = None
    lora_weight: float | None = None
    style: str | None = None  # a style word of the glossary (水彩, 国潮 ...)
    negative: str | None = None  # a NEGATIVE_PRESETS key
    hd: bool = False  # choosing a candidate renders it in HD at once
    seed: int | None = None  # a locked seed (/seed)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserSettings:
        if "sampler" in data:  # stored before settings took WebUI's field names
            data = {"sampler_name": data["sampler"]} | data
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def with_choice(self, name: str, value: str) -> UserSettings:
        """The settings with one keyboard choice applied; ValueError for a value not offered."""
        if name not in CHOICES or value not in CHOICES[name]:
            raise ValueError(f"{name}: {value!r} is not a choice")
        if name == "hd":
            return replace(self, hd=value == "on")
        kinds = {"steps": int, "count": int, "cfg_scale": float, "lora_weight": float}
        return replace(self, **{name: kinds.get(name, str)(value) if value else None})

    def to_template(self, config: Config) -> Preset:
        """The `template` layer for prompts.build_prompt."""
        width = height = None
        if self.size:
            width, height = orientation_size(
                self.size, config.generation.width, config.generation.height
            )
        chosen = {
            "sampler_name": self.sampler_name,
            "steps": self.steps,
            "cfg_scale": self.cfg_scale,
            "width": width,
            "height": height,
            "seed": self.seed,
            "negative_prompt": NEGATIVE_PRESETS.get(self.negative) if self.negative else None,
        }
        return Preset(
            settings={name: value for name, value in chosen.items() if value is not None},
            style_tags=style_tags(self.style, config) if self.style else None,
        )


def style_tags(style: str, config: Config) -> list[str]:
    """The glossary's tags for a style word."""
    term = load_glossary(config.prompts.glossary_dir).terms.get(style.lower())
    if term is None or term.category != "style":
        raise ValueError(f"style: {style!r} is not a style in the glossary")
    return list(term.tags)
