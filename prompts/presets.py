"""Parameter templates ("起手式") and the order they apply in, as pure functions.

A field comes from the first layer that sets it: the request > the user's template > the IP's
defaults > the global defaults ([generation]). Templates are `PresetConfig`s: named ones from
config ([presets.NAME]) and users' saved ones (stored by the bot) have the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from posterbot.config import Config, GenerationConfig, IPConfig, PresetConfig
from prompts.spec import RANDOM_SEED, check_sampler


@dataclass(frozen=True)
class Settings:
    """Every generation parameter a prompt needs, after merging."""

    sampler: str
    steps: int
    cfg_scale: float
    width: int
    height: int
    seed: int
    hires: bool
    negative_prompt: str
    style_tags: list[str]


def ip_layer(ip: IPConfig) -> PresetConfig:
    """The IP's defaults as a template layer; an empty value means "not set"."""
    return PresetConfig(
        negative_prompt=ip.negative_prompt or None, style_tags=list(ip.style_tags) or None
    )


def global_settings(generation: GenerationConfig) -> Settings:
    """The bottom layer: [generation] with no seed lock, no hires fix and no style tags."""
    return Settings(
        sampler=generation.sampler,
        steps=generation.steps,
        cfg_scale=generation.cfg_scale,
        width=generation.width,
        height=generation.height,
        seed=RANDOM_SEED,
        hires=False,
        negative_prompt=generation.negative_prompt,
        style_tags=[],
    )


def merge_settings(layers: list[PresetConfig | None], defaults: Settings) -> Settings:
    """Each field from the first layer (highest priority first) that sets it, else `defaults`.

    Raises ValueError naming the field when the merged sampler is unknown.
    """
    merged = {}
    for f in fields(Settings):
        values = [getattr(layer, f.name) for layer in layers if layer is not None]
        merged[f.name] = next((v for v in values if v is not None), getattr(defaults, f.name))
    merged["sampler"] = check_sampler(merged["sampler"])
    return Settings(**merged)


def find_preset(config: Config, name: str) -> PresetConfig:
    """The named template from config; ValueError listing the names when there is none."""
    if name not in config.presets:
        known = ", ".join(sorted(config.presets)) or "none configured"
        raise ValueError(f"preset: no preset named {name!r} (known: {known})")
    return config.presets[name]
