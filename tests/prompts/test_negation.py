"""Negation scope: what a request says no to is never drawn and goes to the negative prompt."""

from __future__ import annotations

import re

import pytest

from prompts.template import template_prompt
from tests.prompts.test_template import CASES

# (request, words that must be negative and not positive, words that must stay positive)
NEGATIONS = [
    # the festival's own tags: 圣诞 brings a christmas tree, the request says no to it
    ("圣诞海报 不要圣诞树 达达送快递", ["christmas tree"], ["christmas", "delivering parcels"]),
    ("春节，去掉红灯笼", ["red lanterns"], ["chinese new year", "fireworks"]),
    # a space ends the negated phrase: 送快递 after it is wanted
    ("别下雪 送快递", ["snowing"], ["delivering parcels"]),
    ("不要 雪地 挥手", ["snowy field"], ["waving"]),
    ("不要海边和烟花，夏天", ["beach", "fireworks"], ["summer"]),
    # English: the phrase runs over spaces to the comma; words outside the glossary too
    ("christmas, no christmas tree, waving", ["christmas tree"], ["christmas", "waving"]),
    ("summer beach, without seagulls", ["seagulls"], ["summer", "beach"]),
    ("no seagulls 海边", ["seagulls"], ["beach"]),
]


def _parts(prompt: str) -> list[str]:
    """A prompt's comma-separated parts, lower-case, weights and LoRA tags stripped."""
    prompt = re.sub(r"<[^<>]*>", ",", prompt)
    prompt = re.sub(r":\s*[-+.\d]+\s*\)", ")", prompt)
    parts = (part.strip(" ()[]").lower() for part in prompt.split(","))
    return [part for part in parts if part]


def _both(prompt) -> list[str]:
    """Negative words that the positive prompt (sentence or a tag) also holds, as whole words."""
    positive = _parts(prompt.prompt)
    return [
        word
        for word in _parts(prompt.negative_prompt)
        if any(re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", p) for p in positive)
    ]


@pytest.mark.parametrize(
    ("request_text", "negated", "kept"), NEGATIONS, ids=[n[0] for n in NEGATIONS]
)
def test_negated_words_go_to_the_negative_prompt_only(config, request_text, negated, kept):
    prompt = template_prompt(request_text, config)
    negative = _parts(prompt.negative_prompt)
    for word in negated:
        assert word in negative, prompt.negative_prompt
        assert word not in prompt.tags, prompt.tags
    for word in kept:
        assert word in prompt.tags, prompt.tags
    assert not _both(prompt)


@pytest.mark.parametrize(
    "request_text",
    [
        "达达挥手，不要人",
        "达达在公园，不要其他人物",
        "不要路人 达达骑车",
        "no people, dada knight waving",
    ],
)
def test_no_people_means_the_mascot_alone(config, request_text):
    prompt = template_prompt(request_text, config)
    assert "solo" in prompt.tags, prompt.tags
    negative = _parts(prompt.negative_prompt)
    assert "crowd" in negative and "people" in negative, prompt.negative_prompt
    assert not _both(prompt)


@pytest.mark.parametrize(
    "request_text", ["留白给文字，达达送快递", "达达挥手 顶部留白放文字", "给文字留白"]
)
def test_room_for_text_is_copy_space_not_text(config, request_text):
    prompt = template_prompt(request_text, config)
    assert "copy space" in prompt.tags, prompt.tags
    assert not any("text" in tag.split() for tag in prompt.tags), prompt.tags
    assert not _both(prompt)


@pytest.mark.parametrize(("request_text", "expected"), CASES, ids=[c[0][:30] for c in CASES])
def test_no_word_is_both_positive_and_negative(config, request_text, expected):
    assert not _both(template_prompt(request_text, config))
