"""WebUI prompt syntax: attention brackets, explicit weights, escapes, BREAK, LoRA tags."""

from __future__ import annotations

import pytest

from prompts.syntax import (
    BREAK,
    LoraTag,
    extract_loras,
    format_weight,
    has_trigger,
    key_values,
    parse_attention,
)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("a (cat)", [("a ", 1.0), ("cat", 1.1)]),
        ("a ((cat))", [("a ", 1.0), ("cat", pytest.approx(1.21))]),
        ("a [cat]", [("a ", 1.0), ("cat", pytest.approx(1 / 1.1))]),
        ("a (cat:1.5), dog", [("a ", 1.0), ("cat", 1.5), (", dog", 1.0)]),
        ("((a (cat:0.5)))", [("a ", pytest.approx(1.21)), ("cat", pytest.approx(0.605))]),
        (r"\(cat\) \[x\]", [("(cat) [x]", 1.0)]),
        ("a (cat", [("a ", 1.0), ("cat", pytest.approx(1.1))]),  # unclosed applies to the end
        ("cat) dog]", [("cat) dog]", 1.0)]),  # stray closers are text
        ("time: 12", [("time: 12", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_attention_weights_as_webui_reads_them(prompt, expected):
    assert parse_attention(prompt) == expected


def test_break_is_a_separate_marker_only_in_upper_case():
    assert parse_attention("a cat BREAK snow") == [("a cat", 1.0), (BREAK, -1.0), ("snow", 1.0)]
    assert parse_attention("a cat break snow") == [("a cat break snow", 1.0)]


def test_lora_tags_are_removed_and_returned_in_order():
    text, tags = extract_loras("dadaknight, <lora:dada_v3:0.8> snow <lora:style> <hypernet:x:1>")
    assert text == "dadaknight,  snow  "
    assert tags == [LoraTag("dada_v3", 0.8), LoraTag("style", 1.0)]


@pytest.mark.parametrize(
    ("prompt", "message"),
    [("<lora::1>", "has no LoRA name"), ("<lora:x:heavy>", "weight that is not a number")],
)
def test_malformed_lora_tags_name_the_tag(prompt, message):
    with pytest.raises(ValueError, match=message):
        extract_loras(prompt)


def test_tags_render_back_the_way_users_write_them():
    assert LoraTag("dada_v3", 0.8).render() == "<lora:dada_v3:0.8>"
    assert LoraTag("dada_v3", 1.0).render() == "<lora:dada_v3:1>"
    assert format_weight(0.75) == "0.75"


def test_one_trigger_rule_for_prompts_and_captions():
    assert has_trigger("dadaknight, solo, snow", "dadaknight")
    assert has_trigger("A photo of Dada Knight riding", "dada knight")
    assert not has_trigger("dadaknight_v2, solo", "dadaknight")
    assert not has_trigger("dadaknights riding", "dadaknight")


def test_key_values_strips_and_names_the_bad_word():
    assert key_values(["epochs = 8", "unet_lr=5e-5"]) == {"epochs": "8", "unet_lr": "5e-5"}
    with pytest.raises(ValueError, match="'epochs' is not key=value"):
        key_values(["epochs"])
