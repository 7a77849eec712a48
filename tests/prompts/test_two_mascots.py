"""Two mascots on one poster: both triggers, both LoRAs at weights that add up sensibly."""

from __future__ import annotations

import pytest

from posterbot.config import ConfigError, PromptsConfig
from prompts.spec import render_prompt
from prompts.syntax import LoraTag, extract_loras
from prompts.template import template_prompt
from tests.prompts.conftest import make_config


@pytest.mark.parametrize(
    "request_text", ["达达和京东狗一起过年", "京东狗和达达在海边", "dada knight and joy dog waving"]
)
def test_both_mascots_are_drawn(config, request_text):
    prompt = template_prompt(request_text, config)
    assert set(prompt.trigger.split(", ")) == {"dadaknight", "joydog"}
    assert prompt.prompt.startswith(prompt.trigger + ", ")
    _, loras = extract_loras(prompt.prompt)
    assert {lora.name for lora in loras} == {"dada_v3", "joy_v1"}
    assert sum(lora.weight for lora in loras) <= 1.2 + 1e-9
    assert "delivery rider mascot" in prompt.natural_language
    assert "white cartoon dog mascot" in prompt.natural_language
    assert [lora.name for lora in [prompt.lora, *prompt.extra_loras]] == [
        lora.name for lora in loras
    ]
    assert any(note.code == "ips_together" for note in prompt.notes), prompt.notes


def test_the_weights_keep_their_proportions():
    prompt = template_prompt("达达和京东狗一起", make_config())
    assert (prompt.lora.weight, prompt.extra_loras[0].weight) == (0.64, 0.56)  # 0.8 : 0.7
    roomy = make_config(prompts=PromptsConfig(shared_lora_weight=2.0))
    prompt = template_prompt("达达和京东狗一起", roomy)
    assert (prompt.lora.weight, prompt.extra_loras[0].weight) == (0.8, 0.7)  # under the cap


def test_config_can_allow_one_mascot_only():
    prompt = template_prompt(
        "达达和京东狗一起过年", make_config(prompts=PromptsConfig(max_ips_per_poster=1))
    )
    assert prompt.trigger == "dadaknight"
    assert prompt.extra_loras == []
    assert "joydog" not in prompt.prompt and "joy_v1" not in prompt.prompt
    assert any(note.code == "several_ips" and "joy" in str(note) for note in prompt.notes)


def test_an_ip_option_draws_that_one_alone(config):
    prompt = template_prompt("达达和京东狗一起 --ip joy", config)
    assert prompt.trigger == "joydog" and prompt.extra_loras == []


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ConfigError, match=r"prompts\.max_ips_per_poster"):
        PromptsConfig(max_ips_per_poster=0)
    with pytest.raises(ConfigError, match=r"prompts\.shared_lora_weight"):
        PromptsConfig(shared_lora_weight=0)


def test_render_puts_the_second_lora_after_the_first():
    text = render_prompt("a, b", "", ["x"], LoraTag("one", 0.5), [LoraTag("two", 0.4)])
    assert text == "a, b, x, <lora:one:0.5>, <lora:two:0.4>"
