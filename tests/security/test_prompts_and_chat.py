"""Attacks through the chat and the prompt builder (issue #15, points 8, 9, 11, 12, 13): what a
user may type, press or ask for, and what the bot and the builder must do with it.

Pure prompt checks run on the builder with the prompt tests' config; chat checks drive a real
Application against the fake Bot API (which refuses what Telegram refuses) and the real engine.
"""

from __future__ import annotations

import html
import logging
import random
import re

import pytest

from posterbot.errors import Refusal
from prompts.llm import LLMError, parse_answer
from prompts.template import MAX_ATTENTION_WEIGHT, MAX_PROMPT_BREAKS, template_prompt
from tests.bot.conftest import OWNER, USER
from tests.fakes.telegram_api import visible_text
from tests.prompts.conftest import make_config

ERROR_TEXT = "出错了"  # what the error handler says when a handler raised


def said(telegram, chat_id: int, fragment: str) -> list[str]:
    return [text for text in telegram.texts(chat_id) if fragment in text]


def answers(telegram, query_id: str) -> list:
    return [
        c
        for c in telegram.calls
        if c.method == "answerCallbackQuery" and str(c.params.get("callback_query_id")) == query_id
    ]


def refused_requests(telegram) -> list:
    """Bot API calls the fake (as Telegram) refused with 400."""
    return [c for c in telegram.calls if not c.ok and isinstance(c.result, dict)]


# --- 8. raw WebUI prompts: effective attention weights, BREAKs -----------------------------------


@pytest.mark.parametrize(
    ("prompt", "weight"),
    [
        ("dadaknight, " + "(" * 20 + "snow" + ")" * 20, 1.1**20),  # ≈ 6.73, no number typed
        ("dadaknight, ((((((((snow))))))))", 1.1**8),  # ≈ 2.14
        ("dadaknight, ((((snow:1.9))))", 1.9 * 1.1**3),  # an explicit weight inside groups
        ("dadaknight, (snow:-1)", -1.0),
    ],
)
def test_a_raw_prompt_is_refused_by_the_effective_weight_of_its_words(prompt, weight):
    with pytest.raises(Refusal) as refused:
        template_prompt(prompt, make_config())
    assert refused.value.code == "prompt_attention_weight"
    assert refused.value.values["weight"] == round(weight, 2)
    assert refused.value.values["limit"] == MAX_ATTENTION_WEIGHT
    assert f"{round(weight, 2):g}" in str(refused.value)
    assert "snow" in refused.value.values["words"]


@pytest.mark.parametrize(
    "prompt",
    [
        "dadaknight, (((((((snow)))))))",  # 1.1**7 ≈ 1.95
        "dadaknight, ((snow:1.5)), [[[[[[[[[[rain]]]]]]]]]]",
        "dadaknight, \\(((snow)))\\) <lora:dada_v3:0.8>",  # escaped brackets are text
    ],
)
def test_weights_within_the_limit_pass_unchanged(prompt):
    assert template_prompt(prompt, make_config()).prompt == prompt


def test_a_raw_prompt_may_break_a_few_times_but_not_more():
    few = "dadaknight, snow" + " BREAK red" * MAX_PROMPT_BREAKS
    assert template_prompt(few, make_config()).prompt == few
    with pytest.raises(Refusal) as refused:
        template_prompt("dadaknight, snow" + " BREAK red" * 45, make_config())
    assert refused.value.code == "prompt_breaks"
    assert refused.value.values == {"count": 45, "limit": MAX_PROMPT_BREAKS}


@pytest.mark.parametrize(
    "sentence", ["a rider BREAK in the snow", "a rider" + " BREAK" * 45, "BREAK a rider"]
)
def test_an_llm_answer_with_break_is_not_used(sentence):
    answer = f'{{"natural_language": "{sentence}", "tags": ["snow"]}}'
    with pytest.raises(LLMError, match="BREAK"):
        parse_answer(answer, [])


# --- 9. counts: ranges take their upper end, nonsense is ignored with a note ---------------------

COUNT_PHRASES = [
    # (request, images drawn, note codes expected among the notes)
    ("达达骑士送快递，两三张", 3, {"count_range"}),
    ("达达骑士送快递，三五张", 5, {"count_range"}),
    ("达达骑士送快递，一二张", 2, {"count_range"}),
    ("达达骑士送快递，三两张", 3, {"count_range"}),
    ("达达骑士送快递，3-5张", 5, {"count_range"}),
    ("达达骑士送快递，3~5张", 5, {"count_range"}),
    ("达达骑士送快递，三到五张", 5, {"count_range"}),
    ("达达骑士送快递，4到20张", 8, {"count_range"}),  # the upper end within the chat's limit
    ("达达骑士送快递，十十张", None, {"count_unreadable"}),
    ("达达骑士送快递，十二十张", None, {"count_unreadable"}),
    ("达达骑士送快递，两十张", None, {"count_unreadable"}),
    ("达达骑士送快递，三三张", None, {"count_unreadable"}),
    ("达达骑士送快递，十张", 10, set()),
    ("达达骑士送快递，二十五张", 25, set()),
    ("达达骑士送快递，两张", 2, set()),
]


@pytest.mark.parametrize(("request_text", "count", "codes"), COUNT_PHRASES)
def test_count_phrases_never_crash_the_builder(request_text, count, codes):
    config = make_config()
    try:
        prompt = template_prompt(request_text, config)
    except Refusal as refused:  # over [limits]: a refusal with a code, never a KeyError
        assert refused.code == "count_too_many" and count and count > 8
        return
    drawn = prompt.batch_size * prompt.n_iter
    assert drawn == (count or 1)  # no count read: the generation default (the bot's is its own)
    assert codes <= {note.code for note in prompt.notes}
    for note in prompt.notes:
        str(note)  # every note's English text formats


async def test_count_phrases_in_the_chat_get_an_answer_not_an_error(bot, telegram):
    telegram.send_text(USER, "达达骑士送快递，两三张 --steps 1")
    telegram.send_text(USER, "达达骑士送快递，十十张 --steps 1")
    await telegram.wait_for(lambda: len(said(telegram, USER, "收到")) == 2, timeout=120)
    (ranged,) = [text for text in said(telegram, USER, "收到") if "两三张" in text]
    (nonsense,) = [text for text in said(telegram, USER, "收到") if "十十张" in text]
    assert "· 3 张 ·" in ranged  # the range's upper end, and the note says so
    assert "· 4 张 ·" in nonsense and "没看懂" in nonsense  # the bot's default count, noted
    assert not said(telegram, USER, ERROR_TEXT)


# --- 11. long HTML messages: split where Telegram can parse each piece; notes kept short ---------


@pytest.mark.parametrize(
    "text",
    [
        "<b>标签</b> " + html.escape("'", quote=True) * 5000,  # &#x27; cut in half by a char cut
        "<b>备注</b> <i>" + "不认识的词；" * 900 + "</i>",  # one long line in italics
        "<pre>" + "\n".join(f"· 图片-{i}.png &amp; &lt;太小&gt;" for i in range(500)) + "</pre>",
        "<b>" + "字" * 4095 + "</b><i>&amp;&amp;" + "x" * 10 + "</i>",
        "a" * 4093 + "&#x27;" * 10,  # a cut at 4096 characters of markup lands in an entity
        "字" * 4094 + "<i>" + "y" * 10 + "</i>",  # ... or in a tag
    ],
)
def test_every_piece_of_a_long_text_parses_and_fits(text):
    from bot.i18n import split_text

    pieces = split_text(text)
    shown = [visible_text(piece) for piece in pieces]  # raises where Telegram cannot parse
    assert all(len(piece.encode("utf-16-le")) // 2 <= 4096 for piece in shown)
    assert all(piece.strip() for piece in shown)
    assert "".join(shown).replace("\n", "") == visible_text(text).replace("\n", "")


def test_the_fake_api_refuses_what_a_careless_split_sends():
    from tests.fakes.telegram_api import _BadRequest

    for piece in ("a &#x2", "<i>half of it", "7;</i> the rest", "x &am"):
        with pytest.raises(_BadRequest, match="can't parse entities"):
            visible_text(piece)


def test_a_typed_tag_in_the_notes_shows_as_text_escaped_once():
    from bot.features.posters import describe

    prompt = template_prompt("达达骑士送快递 <lora:other:2>", make_config())
    text = describe("zh", prompt, prompt.to_txt2img())
    assert "&lt;lora:other:2&gt;" in text and "&amp;lt;" not in text
    assert "<lora" not in visible_text(text).replace("<lora:other:2>", "")


async def test_a_request_full_of_unknown_words_is_acknowledged_in_one_short_message(bot, telegram):
    words = [f"奇怪词{chr(0x4E00 + i)}" for i in range(300)]
    english = [f"word{i}x" for i in range(200)]
    telegram.send_text(
        USER, "达达骑士，" + "，".join(words) + "，" + " ".join(english) + " --steps 1"
    )
    (ack,) = await telegram.wait_for(lambda: said(telegram, USER, "收到"), timeout=120)
    assert len(visible_text(ack)) < 1500
    assert "等" in ack  # "…等 N 个": the rest counted, not listed
    assert not refused_requests(telegram) and not said(telegram, USER, ERROR_TEXT)


async def test_a_raw_prompt_of_escaped_characters_reaches_the_chat_in_pieces(bot, telegram):
    # Within the engine's prompt limits (about 16 of 20 chunks), but over 4096 characters of
    # HTML once escaped (' is &#x27;).
    telegram.send_text(USER, "dadaknight, " + "'" * 1000 + ", " + "<&>" * 60 + " --steps 1")
    await telegram.wait_for(lambda: said(telegram, USER, "收到"), timeout=120)
    await telegram.wait_for(lambda: telegram.sent("sendMediaGroup", USER), timeout=120)
    assert not refused_requests(telegram), [c.result for c in refused_requests(telegram)]
    assert not said(telegram, USER, ERROR_TEXT)


# --- 12. button presses: every one answered once, malformed data ignored ------------------------


async def open_settings(telegram, user_id: int = USER):
    telegram.send_text(user_id, "/settings")
    (panel,) = await telegram.wait_for(
        lambda: [c for c in telegram.sent("sendMessage", user_id) if "reply_markup" in c.params]
    )
    return panel.result


def random_data(seed: int) -> str:
    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(40)).decode("utf-8", "replace")
    return data.encode()[:64].decode("utf-8", "ignore") or "\x00"


@pytest.mark.parametrize(
    "data",
    [
        f"set:{USER}:bogus",
        f"set:{USER}:size:99",
        f"set:{USER}:size:-1",
        f"set:{USER}:steps:x",
        "pick:x:abc",
        "pick:x",
        "pick",
        "hd:::::::::",
        "nosuch:1:2",
        ":",
        random_data(1),
        random_data(2),
    ],
)
async def test_a_malformed_press_is_answered_once_and_breaks_nothing(bot, telegram, caplog, data):
    caplog.set_level(logging.INFO, logger="bot")
    panel = await open_settings(telegram)
    telegram.press(USER, panel, data)
    query_id = telegram.updates[-1]["callback_query"]["id"]
    await telegram.wait_for(lambda: answers(telegram, query_id))
    # The bot goes on: a good press on the same panel still works, and is answered too.
    telegram.press(USER, panel, f"set:{USER}:steps")
    good = telegram.updates[-1]["callback_query"]["id"]
    await telegram.wait_for(lambda: answers(telegram, good))
    await telegram.wait_for(lambda: telegram.sent("editMessageText", USER))
    assert len(answers(telegram, query_id)) == 1 and len(answers(telegram, good)) == 1
    assert not said(telegram, USER, ERROR_TEXT)
    assert not [r for r in caplog.records if r.exc_info], "a traceback reached the log"
    assert [r for r in caplog.records if "button" in r.getMessage()], "no log line for it"


async def test_a_press_on_a_job_nobody_knows_is_answered_with_a_notice(bot, telegram):
    panel = await open_settings(telegram)
    telegram.press(USER, panel, "pick:0000deadbeef:1")
    query_id = telegram.updates[-1]["callback_query"]["id"]
    (answer,) = await telegram.wait_for(lambda: answers(telegram, query_id))
    assert answer.params.get("text")


# --- 13. promote twice, then rollback ----------------------------------------------------------


async def register_version(telegram, lora_bytes: bytes) -> str:
    before = len(said(telegram, OWNER, "已登记为"))
    telegram.send_text(OWNER, "dada", document=lora_bytes, filename="outside.safetensors")
    registered = await telegram.wait_for(
        lambda: said(telegram, OWNER, "已登记为")[before:], timeout=60
    )
    return re.search(r"<b>(dada-v\d+)</b>", registered[0]).group(1)


async def test_promoting_the_current_version_again_changes_nothing_and_rollback_moves(
    bot, telegram, engine_config_file
):
    lora = (engine_config_file.parent / "data/models/Lora/dada_lora.safetensors").read_bytes()
    first = await register_version(telegram, lora)
    second = await register_version(telegram, lora)
    for version, fragment in [(first, "现在使用"), (second, "现在使用"), (second, "已经在用")]:
        before = len(said(telegram, OWNER, f"{fragment} <b>{version}</b>"))
        telegram.send_text(OWNER, f"/promote dada {version.split('-')[1]}")
        await telegram.wait_for(
            lambda v=version, f=fragment, n=before: (
                len(said(telegram, OWNER, f"{f} <b>{v}</b>")) > n
            )
        )
    telegram.send_text(OWNER, "/rollback dada")
    await telegram.wait_for(lambda: len(said(telegram, OWNER, f"现在使用 <b>{first}</b>")) == 2)
    assert not said(telegram, OWNER, ERROR_TEXT)


def test_versions_promote_is_idempotent_and_rollback_always_moves(engine_config_file, tmp_path):
    from engine.training.versions import Versions
    from posterbot.config import Config, IPConfig

    ip = IPConfig(name="dada", trigger="dadaknight", lora="dada_lora")
    config = Config(data_dir=tmp_path, ips=[ip])
    lora = engine_config_file.parent / "data/models/Lora/dada_lora.safetensors"
    versions = Versions(config)
    first, second = (versions.register(ip, lora)["name"] for _ in range(2))
    assert versions.promote(ip, first)["changed"] is True
    with pytest.raises(Refusal) as nothing:
        versions.rollback(ip)
    assert nothing.value.code == "version_no_rollback"
    assert versions.promote(ip, first)["changed"] is False
    versions.promote(ip, second)
    assert versions.promote(ip, second)["changed"] is False
    assert versions.rollback(ip)["name"] == first
    with pytest.raises(Refusal):
        versions.rollback(ip)
    assert versions.promoted("dada") == first


def test_a_history_with_duplicates_from_before_still_rolls_back_to_another_version(
    engine_config_file, tmp_path
):
    import json

    from engine.training.versions import Versions
    from posterbot.config import Config, IPConfig

    ip = IPConfig(name="dada", trigger="dadaknight", lora="dada_lora")
    versions = Versions(Config(data_dir=tmp_path, ips=[ip]))
    lora = engine_config_file.parent / "data/models/Lora/dada_lora.safetensors"
    first, second = (versions.register(ip, lora)["name"] for _ in range(2))
    data = json.loads(versions.path.read_text())
    data["promoted"]["dada"] = [first, second, second, second]  # promoted thrice by older code
    versions.path.write_text(json.dumps(data))
    assert versions.rollback(ip)["name"] == first
