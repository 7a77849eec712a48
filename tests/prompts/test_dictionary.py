"""The open vocabulary: CC-CEDICT fills the glossary's gaps with short, drawable senses."""

from __future__ import annotations

import pytest

from prompts.dictionary import gerund, load_dictionary, pick_sense, read_dictionary
from prompts.template import template_prompt


def _notes(prompt, code: str) -> str:
    return " ".join(str(note.values.get("words", "")) for note in prompt.notes if note.code == code)


@pytest.mark.parametrize(
    ("verb", "expected"),
    [
        ("drink", "drinking"),
        ("ride", "riding"),
        ("run", "running"),
        ("swim", "swimming"),
        ("lie", "lying"),
        ("open", "opening"),
        ("hold", "holding"),
        ("see", "seeing"),
        ("eat", "eating"),
    ],
)
def test_actions_read_as_ing_forms(verb, expected):
    assert gerund(verb) == expected


@pytest.mark.parametrize(
    ("definitions", "expected"),
    [
        (["alarm clock"], "alarm clock"),
        (["(Internet) flash sale/(sports) rapid dispatch"], "flash sale"),
        (["helmet/CL:頂|顶[ding3]"], "helmet"),
        (["surname Long", "dragon"], None),  # one entry's senses: the surname is no picture
        (["variant of 嗬[he1]/to shout"], "shouting"),
        (["to cut the ribbon (at a launching or opening ceremony)"], "cutting the ribbon"),
        (["(literary) a lofty ideal/plan"], None),
        (["boiled or deep-fried balls of glutinous rice flour, usually eaten in winter"], None),
        (["to be careful/to take care"], None),  # being and taking are no picture
        (["method/way/manner"], None),
    ],
)
def test_a_short_drawable_sense_is_picked(definitions, expected):
    sense = pick_sense("词语", definitions[0].split("/"))
    assert (sense.english if sense else None) == expected


def test_proper_nouns_come_after_common_entries_and_traditional_maps_to_simplified():
    lines = [
        "# CC-CEDICT",
        "獅子 狮子 [Shi1 zi5] /Leo (star sign)/",
        "獅子 狮子 [shi1 zi5] /lion/CL:隻|只[zhi1]/",
        "聖 圣 [sheng4] /holy/sacred/",
        "著 着 [zhao2] /to touch/",
        "著 著 [zhu4] /to write/",
    ]
    dictionary = read_dictionary(lines)
    assert dictionary.lookup("狮子").english == "lion"
    assert dictionary.to_simplified("聖獅") == "圣狮"  # characters of word entries too
    assert dictionary.to_simplified("著") == "著"  # also written as itself in simplified text
    assert dictionary.split("狮子圣") == ["狮子", "圣"]


def test_the_real_dictionary_fills_gaps():
    dictionary = load_dictionary()
    assert dictionary.lookup("长颈鹿").english == "giraffe"
    assert dictionary.lookup("灭火器").english == "fire extinguisher"
    assert dictionary.lookup("然后") is None  # "then": grammar, no picture
    assert dictionary.to_simplified("聖誕節") == "圣诞节"


@pytest.mark.parametrize(
    ("request_text", "tags", "from_dictionary"),
    [
        ("达达喝奶茶", ["drinking milk tea", "bubble tea"], ""),  # the glossary first
        ("达达喝豆浆", ["drinking soy milk"], "豆浆 soy milk"),
        ("达达拿着闹钟", ["holding alarm clock"], ""),
        ("达达和长颈鹿在公园", ["giraffe", "park"], "长颈鹿 giraffe"),
        ("达达拿着灭火器", ["holding fire extinguisher"], "灭火器 fire extinguisher"),
        ("达达吃烤鸭", ["eating roast duck"], "烤鸭 roast duck"),
        ("达达骑着滑板", ["riding skateboard"], "滑板 skateboard"),
        ("新店开业 舞狮", ["grand opening", "lion dance"], ""),
    ],
)
def test_words_outside_the_glossary_are_drawn_and_noted(
    config, request_text, tags, from_dictionary
):
    prompt = template_prompt(request_text, config)
    for tag in tags:
        assert tag in prompt.tags, prompt.tags
    assert from_dictionary in _notes(prompt, "dictionary_words")
    assert not _notes(prompt, "untranslated"), prompt.notes
    if not from_dictionary:
        assert not _notes(prompt, "dictionary_words"), prompt.notes


def test_a_verb_and_its_thing_make_the_sentence(config):
    prompt = template_prompt("达达喝奶茶", config)
    assert "drinking milk tea" in prompt.natural_language
    prompt = template_prompt("达达喝豆浆", config)
    assert "drinking soy milk" in prompt.natural_language


def test_a_dictionary_word_said_no_to_goes_to_the_negative_prompt(config):
    prompt = template_prompt("达达在公园，不要长颈鹿", config)
    assert "giraffe" in prompt.negative_prompt
    assert "giraffe" not in prompt.prompt


def test_a_character_split_off_an_unknown_word_is_not_guessed(config):
    prompt = template_prompt("达达和犇犇犇", config)
    assert "犇犇犇" in _notes(prompt, "untranslated")
    assert not _notes(prompt, "dictionary_words"), prompt.notes
