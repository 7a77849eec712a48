"""A WebUI prompt pasted with Chinese options: the prompt as typed, the options applied."""

from __future__ import annotations

import pytest

from prompts.pasted import protected_spans
from prompts.template import template_prompt

# (request, the prompt the engine gets, what the options set)
PASTED = [
    (
        "dadaknight, (summer beach:1.2), <lora:dada_v3:0.8> 竖版 来4张",
        "dadaknight, (summer beach:1.2), <lora:dada_v3:0.8>",
        {"width": 512, "height": 768, "batch_size": 4},
    ),
    (
        "(joy dog:1.1), beach, <lora:joy_v1:0.7> 横版16:9 种子42",
        "(joy dog:1.1), beach, <lora:joy_v1:0.7>",
        {"width": 832, "height": 448, "seed": 42, "ip": "joy"},
    ),
    (
        "达达, (snowy street:1.3), [crowd], <lora:dada_v3:1> 小红书 高清",
        "dadaknight, (snowy street:1.3), [crowd], <lora:dada_v3:1>",
        {"enable_hr": True, "ip": "dada"},
    ),
    (
        "帮我 (masterpiece:1.2), dadaknight, snow, BREAK christmas 来两张",
        "(masterpiece:1.2), dadaknight, snow, BREAK christmas",
        {"batch_size": 2},
    ),
    # 3:1 inside the LoRA tag is its weight, not a banner ratio; 达达 in a group stays
    (
        "(达达 dadaknight:1.2), <lora:dada_v3:1> 方图",
        "(达达 dadaknight:1.2), <lora:dada_v3:1>",
        {"width": 512, "height": 512},
    ),
]


@pytest.mark.parametrize(("request_text", "prompt_text", "expected"), PASTED)
def test_pasted_prompts_pass_through_with_their_options(
    config, request_text, prompt_text, expected
):
    prompt = template_prompt(request_text, config)
    assert prompt.prompt == prompt_text
    for key, value in expected.items():
        assert getattr(prompt, key) == value, (key, prompt)
    assert any(note.code == "raw_options" for note in prompt.notes), prompt.notes
    assert not any(note.code == "untranslated" for note in prompt.notes)


def test_chinese_words_to_translate_make_it_a_chat_request(config):
    prompt = template_prompt("达达在雪地里送快递 <lora:dada_v3:1>", config)
    assert "delivering parcels" in prompt.tags
    assert prompt.lora.weight == 0.8  # the IP's config, not the typed tag
    assert prompt.targets == []  # no 3:1 banner read from inside the tag
    assert "<lora:dada_v3:1>" in str(prompt.notes)  # the tag is named whole, not mangled


def test_protected_spans_nest_and_respect_escapes():
    text = r"a (b (c:1.1) d:1.2) \(e\) [f] <lora:x:1> (open"
    spans = [text[start:end] for start, end in protected_spans(text)]
    assert spans == ["(b (c:1.1) d:1.2)", "[f]", "<lora:x:1>", "(open"]
