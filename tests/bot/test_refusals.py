"""Refusals reach the chat in the user's language: the bot's own limits, and the engine's
reasons by their stable code; the engine's English (and its server paths) stay in the log."""

from __future__ import annotations

import string

import pytest
from aiohttp import web

from bot.app import build_application, running
from bot.i18n import catalog, t
from bot.refusals import failure_text, refusal_text, request_refusal
from engine.service.client import EngineClient, EngineRejected
from posterbot.config import Config
from prompts.template import template_prompt
from tests.bot.conftest import USER
from tests.fakes.telegram_api import TOKEN, visible_text

# Every code the engine sends (docs/engine-api.md), with example values.
CODES = {
    "invalid_field": {"field": "steps"},
    "out_of_range": {"field": "steps", "value": 500, "low": 1, "high": 150},
    "unknown_sampler": {"name": "Euler z"},
    "lora_missing": {"name": "dada_v9"},
    "model_missing": {"name": "revAnimated"},
    "prompt_too_long": {"limit": 225},
    "size_too_large": {"width": 4096, "height": 4096},
    "queue_full": {},
    "ip_unknown": {"name": "kiki"},
    "dataset_missing": {"name": "kiki"},
    "train_param_invalid": {"name": "network_dim", "value": 0},
    "train_precision_unsupported": {"value": "fp16"},
    "sdxl_training_unsupported": {},
    "version_unknown": {"version": "dada-v9"},
    "version_failed": {"version": "dada-v2"},
    "timeout": {"seconds": 600},
    "out_of_memory": {},
    "worker_died": {},
    "input_missing": {},
    "cancelled": {},
    "internal": {},
}
PATH_DETAIL = "lora: 'dada_v9' not found in /srv/posterbot/models/Lora (available: dada_lora)"


def fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("language", ["zh", "en"])
def test_every_engine_code_has_wording_in_both_languages_that_uses_its_values(language):
    for code, values in CODES.items():
        wording = catalog(language)[f"refusal.{code}"]
        assert fields(wording) <= set(values), code
        rejected = EngineRejected("x: detail", "x", code, values)
        assert visible_text(refusal_text(language, rejected, admin=False)) != ""


def test_a_missing_lora_names_the_lora_and_what_to_do_never_the_path():
    rejected = EngineRejected(PATH_DETAIL, "lora", "lora_missing", {"name": "dada_v9"})
    job = {"id": "j1", "state": "failed", "error": PATH_DETAIL}
    job |= {"error_code": "lora_missing", "error_values": {"name": "dada_v9"}}
    for text in (refusal_text("zh", rejected, admin=True), failure_text("zh", job, admin=True)):
        assert "dada_v9" in text and "/versions" in text
        assert "/srv" not in text and "not found" not in text


def test_without_a_code_users_get_a_generic_text_and_admins_the_engines_words():
    rejected = EngineRejected(PATH_DETAIL, "lora")
    user = refusal_text("zh", rejected, admin=False)
    assert user == catalog("zh")["refusal.generic"]
    assert PATH_DETAIL.split(" (")[0] in visible_text(refusal_text("zh", rejected, admin=True))
    failed = {"id": "j1", "state": "failed", "error": PATH_DETAIL}
    assert failure_text("en", failed, admin=False) == catalog("en")["refusal.generic"]
    assert "/srv/posterbot" in failure_text("en", failed, admin=True)  # a training's admin
    dead = {"id": "j2", "state": "dead", "error": "worker died"}
    assert "退出" in failure_text("zh", dead, admin=False)


async def test_the_client_carries_the_engines_code_and_values():
    body = {
        "error": "sampler_name: unknown sampler 'Euler z'",
        "field": "sampler_name",
        "code": "unknown_sampler",
        "values": {"name": "Euler z"},
    }

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response(body, status=400)

    app = web.Application()
    app.router.add_post("/v1/jobs", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with EngineClient(f"http://127.0.0.1:{port}", retries=0) as engine:
            with pytest.raises(EngineRejected) as refused:
                await engine.submit({"prompt": "x"}, user="tg:1")
    finally:
        await runner.cleanup()
    assert (refused.value.field, refused.value.code) == ("sampler_name", "unknown_sampler")
    assert refused.value.values == {"name": "Euler z"}
    assert "Euler z" in refusal_text("zh", refused.value, admin=False)


async def test_the_bots_own_limits_are_refused_in_the_users_language(bot, telegram):
    telegram.send_text(USER, "达达骑士在雪地里送快递，来12张")
    (refusal,) = await telegram.wait_for(lambda: telegram.texts(USER))
    assert "最多出 8 张" in refusal and "12" in refusal
    assert "allows" not in refusal and "count:" not in refusal


async def test_a_poster_whose_lora_is_missing_never_shows_a_server_path(
    bot_config, telegram, engine_config_file
):
    # A LoRA typed in a WebUI prompt is refused by name (an IP's own untrained LoRA is not: it
    # draws without it, tests/bot/test_first_run.py).
    async with running(build_application(bot_config, TOKEN)):
        telegram.send_text(USER, "dadaknight, a rider in the snow <lora:gone_lora:0.8>")
        answer = await telegram.wait_for(
            lambda: [t for t in telegram.texts(USER) if "gone_lora" in t]
        )
    assert "找不到 LoRA「gone_lora」" in answer[0] and "/versions" in answer[0]  # name, what to do
    said = telegram.texts(USER) + [c.params["text"] for c in telegram.sent("editMessageText", USER)]
    assert not any(str(engine_config_file.parent) in text for text in said)  # the engine's data
    assert not any("not found" in text for text in said)


def test_every_prompt_builder_refusal_has_wording_in_both_languages():
    """Whatever the prompt builder refuses reaches a chat in the user's words, never English."""
    config = Config()
    bad = {
        "达达 --colour red": "option_unknown",
        "达达 --steps many": "option_value",
        '达达 --sampler "Euler a': "option_quotes",
        "达达 --size big": "option_size",
        "达达 标题「" + "长" * 41 + "」": "text_too_long",
        "达达 --steps 999": "out_of_range",
        "达达 --sampler Warp": "unknown_sampler",
        "达达 来99张": "count_too_many",
        "dadaknight <lora:x:9>": "prompt_weight",
        "   ": "request_empty",
        "达达 --preset nope": "preset_unknown",
        "dadaknight <lora::1>": "prompt_lora_tag",
    }
    for request, code in bad.items():
        with pytest.raises(ValueError) as refused:
            template_prompt(request, config)
        assert getattr(refused.value, "code", None) == code, (request, refused.value)
        for language in ("zh", "en"):
            text = request_refusal(language, refused.value)
            assert text != t(language, "refusal.generic"), (request, language)
        assert str(refused.value).split(": ", 1)[1] not in request_refusal("zh", refused.value)
