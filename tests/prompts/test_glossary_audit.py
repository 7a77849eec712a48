"""No glossary entry draws a known Stable Diffusion artefact or the wrong scene."""

from __future__ import annotations

import re

import pytest

from prompts.lexicon import load_glossary
from prompts.template import template_prompt

# Words that make SD draw something no poster wants: a grid of faces or views, gibberish
# letters, a face where the request meant food, or an "in its arms" pose for every holding.
BANNED = (
    "sheet",
    "multiple views",
    "turnaround",
    "face focus",
    "text",
    "letters",
    "words",
    "watermark",
    "signature",
    "logo",
    "speech bubble",
    "comic",
    "split screen",
    "collage",
    "something",
    "in its arms",
)


def _drawn_entries():
    glossary = load_glossary()
    terms = {term for term in glossary.terms.values() if not term.negative_only}
    return sorted(terms, key=lambda term: term.word)


def _holds(value: str, word: str) -> bool:
    return re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", value) is not None


@pytest.mark.parametrize("term", _drawn_entries(), ids=lambda term: term.word)
def test_no_glossary_value_draws_an_artefact(term):
    for value in (*term.tags, term.phrase):
        assert not [word for word in BANNED if _holds(value, word)], (term.word, value)


def test_rain_brings_no_umbrella_unless_asked():
    glossary = load_glossary()
    for word, term in glossary.terms.items():
        if "雨" in word and word not in ("雨伞", "雨衣", "雨披"):
            assert not any("umbrella" in value for value in (*term.tags, term.phrase)), word


@pytest.mark.parametrize(
    ("request_text", "wanted", "unwanted"),
    [
        ("达达点外卖", ["holding a smartphone"], ["delivering", "food delivery"]),
        ("雨天路滑 安全骑行 达达骑电动车", ["rain", "riding an electric scooter"], ["umbrella"]),
        ("达达拿着红包", ["holding red envelopes"], ["carrying"]),
        ("美食特写 火锅", ["close-up", "hot pot"], ["face focus"]),
        ("达达的表情很开心", ["expressive face", "happy"], ["expression sheet"]),
        ("加上文字 达达挥手", ["waving"], ["text"]),
    ],
)
def test_requests_get_the_scene_they_meant(config, request_text, wanted, unwanted):
    prompt = template_prompt(request_text, config)
    for tag in wanted:
        assert tag in prompt.tags, prompt.tags
    for word in unwanted:
        assert not _holds(prompt.prompt, word), prompt.prompt


def test_a_negative_only_word_asked_for_is_noted_and_said_no_to_still_works(config):
    asked = template_prompt("加上文字 达达挥手", config)
    assert any(note.code == "kept_out" for note in asked.notes), asked.notes
    refused = template_prompt("达达挥手，不要logo", config)
    assert refused.negative_prompt.startswith("logo"), refused.negative_prompt
