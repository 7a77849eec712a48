"""Request checks: every bad input raises a ValueError that names the argument."""

from __future__ import annotations

import pytest

from engine.diffusion.params import GenerationParams, from_request, parse_lora_flag
from posterbot.config import GenerationSettings, LimitsConfig

DEFAULTS = GenerationSettings()
LIMITS = LimitsConfig(max_pixels=1024 * 1024, max_steps=60, max_batch_size=4, max_n_iter=4)


def build(**request) -> GenerationParams:
    return from_request({"prompt": "a cat", **request}, DEFAULTS, LIMITS)


def test_defaults_come_from_config():
    params = build()
    assert (params.sampler_name, params.steps, params.cfg_scale) == ("DPM++ 2M Karras", 25, 7.0)
    assert (params.width, params.height) == (512, 768)


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"sampler_name": "Best"}, "sampler_name: unknown sampler 'Best'; valid: Euler a, Euler"),
        ({"sampler_name": "DPM fast"}, "sampler_name: diffusers has no DPM fast sampler"),
        ({"width": 500}, "width: 500 must be a multiple of 8"),
        ({"height": 32}, "height: 32 must be a multiple of 8, at least 64"),
        ({"steps": 0}, r"steps: 0 is outside 1..60"),
        ({"steps": 61}, r"steps: 61 is outside 1..60"),
        ({"batch_size": 5}, r"batch_size: 5 is outside 1..4"),
        ({"n_iter": 9}, r"n_iter: 9 is outside 1..4"),
        ({"cfg_scale": 0.5}, r"cfg_scale: 0.5 is outside"),
        ({"seed": -2}, "seed: must be -1"),
        ({"seed": 2**33}, "seed: must be -1"),
        ({"subseed_strength": 1.5}, "subseed_strength"),
        ({"init_images": [], "mask": "input:" + "0" * 64}, "mask: inpainting needs init_images"),
        ({"resize_mode": 4, "init_images": ["input:" + "0" * 64]}, "resize_mode: 4 is outside"),
        ({"width": 1024, "height": 1024, "enable_hr": True}, "exceeds the limit of 1048576 pixels"),
        ({"steps": "many"}, "steps: must be a whole number"),
        ({"enable_hr": "yes"}, "enable_hr: must be true or false"),
        ({"mystery": 1}, "mystery: unknown field"),
        ({"prompt": "a <lora:x:heavy>"}, "weight that is not a number"),
        ({"prompt": "x" * 5000}, "prompt: longer than 4000"),
        ({"loras": "dada"}, "loras: must be a list"),
    ],
)
def test_bad_input_names_the_argument(request_fields, message):
    with pytest.raises(ValueError, match=message):
        build(**request_fields)


def test_missing_prompt_is_named():
    with pytest.raises(ValueError, match="prompt: required"):
        from_request({}, DEFAULTS, LIMITS)


def test_sampler_names_are_matched_case_insensitively():
    assert build(sampler_name="dpm++ 2m karras").sampler_name == "DPM++ 2M Karras"


def test_width_not_a_multiple_of_64_is_allowed_with_a_warning(caplog):
    assert build(width=520).width == 520
    assert "not a multiple of 64" in caplog.text


def test_webui_seed_rules():
    assert build(seed=10, batch_size=2, n_iter=2).seeds() == ([10, 11, 12, 13], [-1] * 4)
    seeds, subseeds = build(seed=10, subseed=3, subseed_strength=0.2, batch_size=3).seeds()
    assert seeds == [10, 10, 10] and subseeds == [3, 4, 5]


def test_hires_size_from_scale_or_target():
    assert build(width=512, height=768, enable_hr=True, hr_scale=1.5).hires_size() == (768, 1152)
    assert build(width=512, height=768, enable_hr=True, hr_resize_y=960).hires_size() == (640, 960)
    assert build(width=512, height=768).hires_size() == (512, 768)


def test_lora_flag_parsing():
    assert parse_lora_flag("dada_v3:0.7").weight == 0.7
    assert parse_lora_flag("dada_v3").weight == 1.0
    with pytest.raises(ValueError, match="--lora: 'dada:x' is not NAME:WEIGHT"):
        parse_lora_flag("dada:x")
