"""Typos and variants: pinyin-alike festival and motif names, traditional characters,
full-width digits; the correction is in the notes."""

from __future__ import annotations

import pytest

from prompts.template import template_prompt


def _corrected(prompt) -> str:
    return " ".join(note.values["words"] for note in prompt.notes if note.code == "corrected")


@pytest.mark.parametrize(
    ("request_text", "tags", "correction"),
    [
        ("元霄节达达赏月", ["lantern festival", "looking at the moon"], "元霄节 → 元宵节"),
        ("达达吃汤元", ["eating tangyuan"], "汤元 → 汤圆"),
        ("国亲节放烟花", ["national day", "fireworks"], "国亲节 → 国庆节"),  # qin for qing
        ("端五节划龙舟", ["dragon boat festival"], "端五节 → 端午节"),
        ("中球节吃月饼", ["mid-autumn festival", "eating mooncake"], "中球节 → 中秋节"),
        ("圣旦节 达达送快递", ["christmas", "delivering parcels"], "圣旦节 → 圣诞节"),
        ("万圣结南瓜", ["halloween", "pumpkins"], "万圣结 → 万圣节"),
        ("聖誕節 達達送快遞", ["christmas", "delivering parcels"], "聖誕節 → 圣诞节"),
        ("國慶節 放煙花", ["national day", "fireworks"], "國慶節 → 国庆节"),
    ],
)
def test_typos_and_traditional_characters_are_read_and_noted(
    config, request_text, tags, correction
):
    prompt = template_prompt(request_text, config)
    for tag in tags:
        assert tag in prompt.tags, prompt.tags
    assert correction in _corrected(prompt), prompt.notes
    assert not [note for note in prompt.notes if note.code == "untranslated"], prompt.notes


def test_traditional_copy_in_quotes_stays_as_typed(config):
    prompt = template_prompt("標題「聖誕快樂」 聖誕 達達", config)
    assert prompt.title == "聖誕快樂"
    assert prompt.ip == "dada"
    assert "christmas" in prompt.tags


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        ("来４张 圣诞", {"batch_size": 4}),
        ("尺寸１０８０ｘ１９２０", {"width": 448, "height": 832}),
        ("比例１６：９", {"width": 832, "height": 448}),
    ],
)
def test_full_width_digits_are_digits(config, request_text, expected):
    prompt = template_prompt(request_text, config)
    for key, value in expected.items():
        assert getattr(prompt, key) == value, prompt


@pytest.mark.parametrize("request_text", ["达达喝豆浆", "春节海报", "达达在公园"])
def test_real_words_are_not_corrected(config, request_text):
    assert not _corrected(template_prompt(request_text, config))
