"""Parameter templates ("起手式") and the order they apply in, as pure functions.

A setting comes from the first layer that sets it: the request > the user's template > the IP's
defaults > the global defaults ([generation]). Every layer is a `Preset` (the settings it sets,
with WebUI's field names, and optional style tags): named ones from config ([presets.NAME]), users'
saved ones (stored by the bot), the IP's, and the request's own.
"""

from __future__ import annotations

from dataclasses import replace

from posterbot.config import Config, GenerationSettings, IPConfig, Preset
from posterbot.errors import Refusal
from prompts.spec import check_sampler


def ip_layer(ip: IPConfig) -> Preset:
    """The IP's defaults as a template layer; an empty value means "not set"."""
    settings = {"negative_prompt": ip.negative_prompt} if ip.negative_prompt else {}
    return Preset(settings=settings, style_tags=list(ip.style_tags) or None)


def merge_settings(
    layers: list[Preset | None], defaults: GenerationSettings
) -> tuple[GenerationSettings, list[str]]:
    """The settings and style tags after merging, highest-priority layer first.

    Raises ValueError naming the field when a merged value cannot be used (an unknown sampler).
    """
    present = [layer for layer in layers if layer is not None]
    overrides: dict = {}
    for layer in reversed(present):
        overrides |= layer.settings
    settings = replace(defaults, **overrides)
    settings = replace(settings, sampler_name=check_sampler(settings.sampler_name))
    style_tags = next((layer.style_tags for layer in present if layer.style_tags is not None), [])
    return settings, list(style_tags)


def find_preset(config: Config, name: str) -> Preset:
    """The named template from config; ValueError listing the names when there is none."""
    if name not in config.presets:
        known = ", ".join(sorted(config.presets)) or "none configured"
        raise Refusal(
            "preset", f"no preset named {name!r} (known: {known})", "preset_unknown", name=name
        )
    return config.presets[name]
