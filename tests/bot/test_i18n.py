"""Message catalogs: both languages complete, values escaped, long texts split for Telegram."""

import re
import string

from bot.i18n import (
    MAX_MESSAGE_CHARS,
    catalog,
    pick_language,
    shorten,
    split_text,
    t,
)


def test_catalogs_have_the_same_messages_and_placeholders():
    zh, en = catalog("zh"), catalog("en")
    assert set(zh) == set(en)
    fields = lambda text: {name for _, name, _, _ in string.Formatter().parse(text) if name}  # noqa: E731
    for key in zh:
        assert fields(zh[key]) == fields(en[key]), key


def test_every_message_the_code_names_exists():
    from pathlib import Path

    source = "\n".join(p.read_text() for p in Path("bot").rglob("*.py"))
    named = set(re.findall(r't\(\s*\w+,\s*"(\w+)"', source))
    named |= set(re.findall(r'say\(\s*[\w.]+,\s*[\w.\[\]0-9]+,\s*"(\w+)"', source))
    assert named, "the pattern should find the message keys"
    assert named <= set(catalog("zh")), named - set(catalog("zh"))


def test_values_are_escaped_so_lora_tags_show_as_text():
    text = t("zh", "bad_request", reason="<lora:dada_v3:0.8> & more")
    assert "&lt;lora:dada_v3:0.8&gt; &amp; more" in text


def test_chinese_is_the_default_and_english_clients_get_english():
    assert pick_language(None, None) == "zh"
    assert pick_language(None, "zh-hans") == "zh"
    assert pick_language(None, "en-US") == "en"
    assert pick_language("zh", "en") == "zh"  # /lang wins


def test_long_texts_are_split_within_telegrams_limit():
    text = "\n".join(f"line {i} " + "字" * 50 for i in range(300))
    pieces = split_text(text)
    assert len(pieces) > 1
    assert all(len(piece) <= MAX_MESSAGE_CHARS for piece in pieces)
    assert "\n".join(pieces) == text
    assert [len(p) for p in split_text("x" * 9000)] == [4096, 4096, 808]


def test_a_long_preformatted_block_is_split_into_pieces_telegram_can_parse():
    from tests.fakes.telegram_api import visible_text

    report = "\n".join(f"· image-{i}.png: too small" for i in range(400))
    text = t("zh", "dataset_report", report=report, name="dada", ip="dada")
    pieces = split_text(text)
    assert len(pieces) > 1
    shown = [visible_text(piece) for piece in pieces]  # each parses as Telegram's HTML
    assert all(len(piece) <= MAX_MESSAGE_CHARS for piece in shown)
    assert "\n".join(shown) == visible_text(text)
    assert all(piece.startswith("<pre>") for piece in pieces[1:])


def test_captions_are_cut_to_telegrams_limit():
    assert len(shorten("字" * 2000)) == 1024
    assert shorten("short") == "short"


def test_every_prompt_builder_note_speaks_both_languages():
    from prompts.notes import NOTE_TEXTS

    fields = lambda text: {name for _, name, _, _ in string.Formatter().parse(text) if name}  # noqa: E731
    for code, english in NOTE_TEXTS.items():
        for language in ("zh", "en"):
            text = catalog(language).get(f"note_{code}")
            assert text is not None, f"note_{code} is missing in {language}"
            assert fields(text) <= fields(english), (language, code)
