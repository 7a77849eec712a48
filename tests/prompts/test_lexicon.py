"""The glossary files: coverage, consistency, admin overrides, and finding words in text."""

from __future__ import annotations

import pytest

from prompts.lexicon import BUILTIN_DIR, CATEGORIES, load_glossary, read_glossary

# The issue's examples, one list per category: each must be in the glossary.
ISSUE_WORDS = {
    "festival": [
        "春节",
        "元宵",
        "情人节",
        "三八",
        "清明",
        "五一",
        "端午",
        "618",
        "七夕",
        "中秋",
        "国庆",
        "双十一",
        "双十二",
        "圣诞",
        "元旦",
        "年货节",
        "开学季",
    ],
    "action": ["送快递", "骑电动车", "挥手", "奔跑", "比心", "拿着礼物"],
    "style": ["3d", "c4d", "扁平插画", "国潮", "赛博朋克", "水彩", "像素", "日系"],
    "shot": ["全身", "半身", "特写", "俯视"],
}


def test_every_category_has_a_file_and_the_glossary_is_rich():
    glossary = load_glossary()
    entries = {term for term in glossary.terms.values()}
    for category in CATEGORIES:
        assert sum(term.category == category for term in entries) >= 9, category
    assert len(entries) >= 300
    assert len(glossary.terms) >= 1000  # words and synonyms


@pytest.mark.parametrize("category", sorted(ISSUE_WORDS))
def test_the_issues_examples_are_covered(category):
    glossary = load_glossary()
    for word in ISSUE_WORDS[category]:
        assert glossary.terms[word].category == category, word


def test_no_word_is_in_two_builtin_files():
    owner: dict[str, str] = {}
    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        glossary = read_glossary([path])
        for word in [*glossary.terms, *glossary.ignore]:
            assert word not in owner, f"{word!r} in {owner.get(word)} and {path.name}"
            owner[word] = path.name


def test_words_are_found_inside_running_text():
    tokens = load_glossary().tokenize("达达骑士在雪地里送快递，不要文字")
    terms = [t.text for t in tokens if t.kind == "term"]
    assert terms[-3:] == ["雪地里", "送快递", "文字"]
    assert [t.kind for t in tokens if t.text == "不要"] == ["negation"]


def test_english_phrases_are_found_whole():
    tokens = load_glossary().tokenize("close up of a mascot delivering parcels")
    assert [t.term.tags[0] for t in tokens if t.kind == "term"] == [
        "close-up",
        "delivering parcels",
    ]


def test_admin_files_add_and_override_words(tmp_path):
    (tmp_path / "ours.toml").write_text(
        'category = "scene"\n[terms]\n"雪地" = { phrase = "on a glacier", tags = ["glacier"] }\n'
        '"冰壶馆" = "curling rink"\n',
        encoding="utf-8",
    )
    glossary = load_glossary(str(tmp_path))
    assert glossary.terms["雪地"].tags == ("glacier",)
    assert glossary.terms["冰壶馆"].tags == ("curling rink",)
    assert load_glossary().terms["雪地"].tags[0] == "snowy field"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('category = "food"\n[terms]\n"饭" = "rice"\n', "category must be one of"),
        ('category = "prop"\n[terms]\n"饭" = "(rice:1.5)"\n', "not plain lower-case English"),
        ('category = "prop"\n[terms]\n"饭" = "rice, bowl"\n', "no commas"),
        ('category = "prop"\n[terms]\n"饭" = { tag = ["rice"] }\n', "unknown keys ['tag']"),
        (
            'category = "prop"\n[terms]\n"饭" = "rice"\n'
            '"米饭" = { tags = ["rice"], also = ["饭"] }\n',
            "'饭' appears twice",
        ),
        ('[channels]\n"海报" = "big"\n', "channels.海报: 'big' is not WIDTHxHEIGHT"),
        ('[channel_aliases]\n"红书" = "nowhere"\n', "channel_aliases.红书: no channel 'nowhere'"),
        ("category = [", "not valid TOML"),
    ],
)
def test_bad_glossary_files_name_the_file_and_word(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.toml") as error:
        read_glossary([path])
    assert message in str(error.value)


def test_missing_glossary_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"prompts\.glossary_dir: .* is not a folder"):
        load_glossary(str(tmp_path / "nope"))


def test_an_admins_file_can_alias_our_channels(tmp_path):
    (tmp_path / "mine.toml").write_text('[channel_aliases]\n"xhs" = "小红书"\n', encoding="utf-8")
    glossary = read_glossary([*sorted(BUILTIN_DIR.glob("*.toml")), tmp_path / "mine.toml"])
    assert glossary.channels["xhs"] == glossary.channels["小红书"]
