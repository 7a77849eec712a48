"""Merge order: the request > the user's template > the IP's defaults > global defaults."""

from __future__ import annotations

import pytest

from posterbot.config import GenerationConfig, PresetConfig
from prompts.presets import find_preset, global_settings, ip_layer, merge_settings

DEFAULTS = global_settings(GenerationConfig(negative_prompt="global negative"))


def test_each_field_comes_from_the_first_layer_that_sets_it(config):
    request = PresetConfig(steps=40)
    template = PresetConfig(steps=30, sampler="Euler a", style_tags=["watercolor"])
    dada = ip_layer(config.ips[0])
    settings = merge_settings([request, template, dada], DEFAULTS)
    assert settings.steps == 40  # request
    assert settings.sampler == "Euler a"  # template
    assert settings.style_tags == ["watercolor"]  # template over the IP's ["3d render", "c4d"]
    assert settings.negative_prompt == "lowres, watermark, blurry"  # IP over global
    assert (settings.cfg_scale, settings.width, settings.height) == (7.0, 512, 768)  # global
    assert (settings.seed, settings.hires) == (-1, False)


def test_an_ip_without_defaults_falls_through_to_global(config):
    joy = ip_layer(config.ips[1])
    settings = merge_settings([None, None, joy], DEFAULTS)
    assert settings.negative_prompt == "global negative" and settings.style_tags == []


def test_a_template_can_turn_hires_off_against_a_request_that_says_nothing():
    settings = merge_settings([PresetConfig(), PresetConfig(hires=False)], DEFAULTS)
    assert settings.hires is False


def test_unknown_sampler_in_a_template_is_refused():
    with pytest.raises(ValueError, match="sampler: unknown sampler 'Warp'"):
        merge_settings([PresetConfig(sampler="Warp")], DEFAULTS)


def test_find_preset(config):
    assert find_preset(config, "draft").steps == 20
    with pytest.raises(ValueError, match="preset: no preset named 'x' \\(known: draft, final\\)"):
        find_preset(config, "x")
