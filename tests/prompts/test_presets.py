"""Merge order: the request > the user's template > the IP's defaults > global defaults."""

from __future__ import annotations

import pytest

from posterbot.config import GenerationSettings, Preset
from prompts.presets import find_preset, ip_layer, merge_settings

DEFAULTS = GenerationSettings(negative_prompt="global negative")


def test_each_field_comes_from_the_first_layer_that_sets_it(config):
    request = Preset(settings={"steps": 40})
    template = Preset(settings={"steps": 30, "sampler_name": "Euler a"}, style_tags=["watercolor"])
    dada = ip_layer(config.ips[0])
    settings, style_tags = merge_settings([request, template, dada], DEFAULTS)
    assert settings.steps == 40  # request
    assert settings.sampler_name == "Euler a"  # template
    assert style_tags == ["watercolor"]  # template over the IP's ["3d render", "c4d"]
    assert settings.negative_prompt == "lowres, watermark, blurry"  # IP over global
    assert (settings.cfg_scale, settings.width, settings.height) == (7.0, 512, 768)  # global
    assert (settings.seed, settings.enable_hr) == (-1, False)


def test_an_ip_without_defaults_falls_through_to_global(config):
    joy = ip_layer(config.ips[1])
    settings, style_tags = merge_settings([None, None, joy], DEFAULTS)
    assert settings.negative_prompt == "global negative" and style_tags == []


def test_a_template_can_turn_hires_off_against_a_request_that_says_nothing():
    defaults = GenerationSettings(enable_hr=True)
    settings, _ = merge_settings([Preset(), Preset(settings={"enable_hr": False})], defaults)
    assert settings.enable_hr is False


def test_unknown_sampler_in_a_template_is_refused():
    with pytest.raises(ValueError, match="sampler_name: unknown sampler 'Warp'"):
        merge_settings([Preset(settings={"sampler_name": "Warp"})], DEFAULTS)


def test_find_preset(config):
    assert find_preset(config, "draft").settings["steps"] == 20
    with pytest.raises(ValueError, match="preset: no preset named 'x' \\(known: draft, final\\)"):
        find_preset(config, "x")
