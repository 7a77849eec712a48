"""The structured prompt's shape: rendering, JSON, WebUI request fields, sampler names."""

from __future__ import annotations

import json

import pytest

from prompts.spec import SAMPLER_NAMES, PosterPrompt, Target, check_sampler, render_prompt
from prompts.syntax import LoraTag, extract_loras


def test_render_puts_trigger_first_and_lora_last():
    prompt = render_prompt(
        "dadaknight", "a mascot in the snow", ["snow", "poster"], LoraTag("dada_v3", 0.8)
    )
    assert prompt == "dadaknight, a mascot in the snow, snow, poster, <lora:dada_v3:0.8>"
    text, loras = extract_loras(prompt)  # what the engine does with it
    assert loras == [LoraTag("dada_v3", 0.8)] and not text.endswith("<")


def test_render_leaves_out_empty_parts():
    assert render_prompt("", "", ["snow"], None) == "snow"


def _prompt(**changes) -> PosterPrompt:
    values = dict(
        ip="dada",
        trigger="dadaknight",
        natural_language="a mascot",
        tags=["snow"],
        negative_prompt="lowres",
        lora=LoraTag("dada_v3", 0.8),
        prompt="dadaknight, a mascot",
        width=512,
        height=768,
        batch_size=4,
        n_iter=1,
        sampler_name="Euler a",
        steps=25,
        cfg_scale=7.0,
        seed=-1,
        enable_hr=False,
        title="圣诞快乐",
    )
    return PosterPrompt(**(values | changes))


def test_json_shape():
    data = json.loads(json.dumps(_prompt().to_dict(), ensure_ascii=False))
    assert data["lora"] == {"name": "dada_v3", "weight": 0.8}
    assert data["source"] == "template" and data["notes"] == []
    assert data["targets"] == [] and data["cta"] == ""
    assert _prompt(lora=None).to_dict()["lora"] is None
    targets = [Target("小红书", 1242, 1660), Target("A4", 2480, 3508, 300)]
    assert _prompt(targets=targets, cta="立即下单").to_dict()["targets"] == [
        {"name": "小红书", "width": 1242, "height": 1660, "dpi": None},
        {"name": "A4", "width": 2480, "height": 3508, "dpi": 300},
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1080x1920", Target("1080x1920", 1080, 1920)),
        ("1080 × 1920", Target("1080x1920", 1080, 1920)),
        ("3150x7874@100", Target("3150x7874@100", 3150, 7874, 100)),
        ("2480*3508 @ 300dpi", Target("2480x3508@300", 2480, 3508, 300)),
        ("0x100", None),
        ("big", None),
    ],
)
def test_target_parses_pixel_sizes(text, expected):
    assert Target.parse(text) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [(("x", 0, 10), "size: 0x10 must be positive"), (("x", 10, 10, 0), "dpi: 0 must be")],
)
def test_target_names_the_bad_argument(args, message):
    with pytest.raises(ValueError, match=message):
        Target(*args)


def test_txt2img_fields_use_webui_names():
    request = _prompt().to_txt2img()
    assert request["sampler_name"] == "Euler a"
    assert request["enable_hr"] is False and request["batch_size"] == 4


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="source: must be one of"):
        _prompt(source="magic")


def test_sampler_names_any_case_and_errors_list_the_valid_ones():
    assert check_sampler("dpm++ 2m karras") == "DPM++ 2M Karras"
    assert {"PLMS", "DDIM", "UniPC", "Euler Karras"} <= set(SAMPLER_NAMES)
    with pytest.raises(
        ValueError, match="sampler_name: unknown sampler 'k_euler'; valid: Euler a,"
    ):
        check_sampler("k_euler")
