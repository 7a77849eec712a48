"""What weighs most comes first: trigger, subject, action and place inside CLIP's first 75
tokens, style and quality after; near-duplicate tags merged; chat English never a tag."""

from __future__ import annotations

import pytest

from prompts.lexicon import load_glossary
from prompts.syntax import CHUNK_TOKENS, estimate_tokens
from prompts.template import merge_near_duplicates, parse_request, template_prompt
from tests.prompts.test_template import CASES

FRONT = ("action", "scene")


def _front_end(prompt, request_text, config) -> int:
    """Where in the prompt the last action or place tag ends (0: none)."""
    draft = parse_request(request_text, config)
    glossary = load_glossary()
    front = {
        term.tags[0]
        for term in glossary.terms.values()
        if term.category in FRONT and term.tags and term.tags[0] in prompt.tags
    }
    front &= set(draft.content_tags)
    ends = [prompt.prompt.find(tag) + len(tag) for tag in front if tag in prompt.prompt]
    return max(ends, default=0)


@pytest.mark.parametrize(("request_text", "expected"), CASES, ids=[c[0][:30] for c in CASES])
def test_subject_action_and_place_fit_the_first_chunk(config, request_text, expected):
    prompt = template_prompt(request_text, config)
    if prompt.notes and prompt.notes[0].code == "raw_prompt":
        return  # a WebUI prompt is the user's order
    front = prompt.prompt[: _front_end(prompt, request_text, config)]
    assert estimate_tokens(front) <= CHUNK_TOKENS, front
    # the style and quality tags follow every tag of what the request is about
    draft = parse_request(request_text, config)
    content = [tag for tag in draft.content_tags if tag in prompt.tags]
    later = [tag for tag in [*draft.style_tags, *draft.quality_tags] if tag not in content]
    if content and later and later[0] in prompt.tags:
        assert prompt.tags.index(content[-1]) < prompt.tags.index(later[0]), prompt.tags


def test_actions_and_places_come_before_festival_boilerplate(config):
    prompt = template_prompt("圣诞节 达达在雪地里送快递", config)
    assert prompt.tags.index("delivering parcels") < prompt.tags.index("christmas tree")
    assert prompt.tags.index("snowy field") < prompt.tags.index("christmas tree")


@pytest.mark.parametrize(
    ("tags", "merged"),
    [
        (["lanterns", "lantern"], ["lanterns"]),
        (["eating mooncake", "mooncakes"], ["eating mooncake"]),
        (["mooncakes", "eating mooncake"], ["eating mooncake"]),
        (["sale", "flash sale"], ["flash sale"]),
        (["parties", "party"], ["parties"]),
        (["glass", "grass"], ["glass", "grass"]),  # "ss" is no plural
        (["christmas", "christmas tree"], ["christmas", "christmas tree"]),
    ],
)
def test_near_duplicate_tags_merge(tags, merged):
    assert merge_near_duplicates(tags) == merged


def test_a_festival_thing_and_eating_it_are_one_tag(config):
    prompt = template_prompt("中秋节吃月饼", config)
    assert "eating mooncake" in prompt.tags
    assert "mooncakes" not in prompt.tags and "mooncake" not in prompt.tags


@pytest.mark.parametrize(
    "request_text",
    [
        "pls give 达达 a christmas vibe",
        "达达 summer vibes pls",
        "can u make dada knight waving, thx",
        "I want 达达 at the beach, just something nice",
    ],
)
def test_chat_english_never_becomes_a_tag(config, request_text):
    prompt = template_prompt(request_text, config)
    fillers = {"pls", "give", "vibe", "vibes", "u", "thx", "want", "just", "something", "nice", "i"}
    words = {word for tag in prompt.tags for word in tag.split()}
    assert not words & fillers, prompt.tags
    assert prompt.tags, prompt
