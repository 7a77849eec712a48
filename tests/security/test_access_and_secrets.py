"""Access is checked on every button press as on every message, and no secret reaches a log
line, an error text or the terminal (issue: hardening, points 1–2)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from bot.app import build_application, running
from engine.service.client import EngineClient
from tests.bot.conftest import GROUP, OWNER, STRANGER, USER
from tests.bot.test_run import RUN_TIMEOUT_S, environment, run_command, write_config
from tests.fakes.telegram_api import TOKEN


async def candidates_in(telegram, user: int, chat: int):
    """A request in `chat`, then the message with the candidates' buttons."""
    request = "达达骑士在雪地里送快递"
    telegram.send_text(user, f"/poster {request}" if chat < 0 else request, chat_id=chat)
    return (
        await telegram.wait_for(
            lambda: [c for c in telegram.sent("sendMessage", chat) if "reply_markup" in c.params]
        )
    )[-1]


def callback(choose, prefix: str) -> str:
    rows = choose.params["reply_markup"]["inline_keyboard"]
    return next(b["callback_data"] for row in rows for b in row if b["callback_data"][:3] == prefix)


async def jobs_of(engine_url: str, user: int) -> int:
    async with EngineClient(engine_url) as engine:
        return len(await engine.jobs(user=f"tg:{user}", limit=200))


async def answers(telegram, count: int) -> list:
    return await telegram.wait_for(
        lambda: (found := telegram.sent("answerCallbackQuery")) and len(found) >= count and found
    )


async def test_a_denied_user_cannot_reroll_an_old_result(bot, telegram, engine_url):
    choose = await candidates_in(telegram, USER, USER)
    telegram.send_text(OWNER, f"/deny {USER}")
    await telegram.wait_for(lambda: telegram.texts(OWNER))
    before = await jobs_of(engine_url, USER)
    for prefix in ("rer", "pic"):  # reroll, and picking a candidate (its HD, variations)
        telegram.press(USER, choose.result, callback(choose, prefix))
    refused = await answers(telegram, 2)
    assert all("没有使用权限" in call.params["text"] for call in refused)
    await asyncio.sleep(1.0)  # a job submitted anyway would be queued by now
    assert await jobs_of(engine_url, USER) == before
    assert len(telegram.sent("sendMediaGroup", USER)) == 1


async def test_a_member_admitted_only_in_a_group_cannot_press_in_a_private_chat(
    bot, telegram, engine_url
):
    telegram.chat(GROUP)
    choose = await candidates_in(telegram, STRANGER, GROUP)  # a member of an allowed group
    before = await jobs_of(engine_url, STRANGER)
    private = {**choose.result, "chat": telegram.chat(STRANGER)}  # the same data, in private
    telegram.press(STRANGER, private, callback(choose, "rer"))
    refused = await answers(telegram, 1)
    assert "没有使用权限" in refused[0].params["text"]
    await asyncio.sleep(1.0)
    assert await jobs_of(engine_url, STRANGER) == before


async def test_a_group_taken_off_the_list_cannot_press_either(bot_config, telegram, engine_url):
    async with running(build_application(bot_config, TOKEN)):
        telegram.chat(GROUP)
        choose = await candidates_in(telegram, STRANGER, GROUP)
        telegram.send_text(OWNER, f"/deny {GROUP}")
        await telegram.wait_for(lambda: telegram.texts(OWNER))
        before = await jobs_of(engine_url, STRANGER)
        telegram.press(STRANGER, choose.result, callback(choose, "rer"))
        refused = await answers(telegram, 1)
    assert "本群还没有开通" in refused[0].params["text"]
    assert await jobs_of(engine_url, STRANGER) == before


async def test_a_denied_user_cannot_change_settings_from_an_old_panel(bot, telegram):
    telegram.send_text(USER, "/settings")
    panel = (
        await telegram.wait_for(
            lambda: [c for c in telegram.sent("sendMessage", USER) if "reply_markup" in c.params]
        )
    )[-1]
    telegram.send_text(OWNER, f"/deny {USER}")
    await telegram.wait_for(lambda: telegram.texts(OWNER))
    core = bot.bot_data["core"]
    stored = core.store.user(USER)["settings"]
    telegram.press(USER, panel.result, callback(panel, "set"))
    refused = await answers(telegram, 1)
    assert "没有使用权限" in refused[0].params["text"]
    assert core.store.user(USER)["settings"] == stored


async def test_a_full_bot_run_never_writes_the_token_and_a_refused_token_is_one_line(
    tiny_model, tmp_path, telegram
):
    config = write_config(tmp_path, tiny_model, telegram.base_url)
    process = subprocess.Popen(
        run_command(config), env=environment(TOKEN), stderr=subprocess.PIPE, text=True
    )
    try:
        telegram.send_text(USER, "达达骑士在雪地里送快递")
        await telegram.wait_for(
            lambda: telegram.sent("sendMediaGroup", USER), timeout=RUN_TIMEOUT_S
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    log = (tmp_path / "data" / "logs" / "posterbot.log").read_text("utf-8")
    assert "getUpdates" not in log or "[secret]" in log  # request lines, if any, redacted
    assert TOKEN not in log and TOKEN not in stderr
    assert TOKEN.split(":")[1] not in log + stderr  # not even the secret half

    refused = await asyncio.to_thread(  # the fake Bot API answers from this event loop
        subprocess.run,
        [sys.executable, "-m", "posterbot", "--config", str(config), "bot"],
        env=environment("123456:revoked-token-value"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in refused.stderr and "@BotFather" in refused.stderr
    assert "revoked-token-value" not in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr


def test_metrics_and_errors_never_show_the_engine_token(live_service):
    import urllib.request

    from tests.engine.conftest import AUTH
    from tests.engine.conftest import TOKEN as ENGINE_TOKEN

    request = urllib.request.Request(live_service.url + "/metrics", headers=AUTH)
    with urllib.request.urlopen(request, timeout=60) as response:
        metrics = response.read().decode()
    assert "posterbot" in metrics and ENGINE_TOKEN not in metrics
    wrong = f"{ENGINE_TOKEN}-wrong"
    status, body = live_service.request(
        "GET", "/v1/models", headers={"Authorization": f"Bearer {wrong}"}
    )
    assert status == 401 and wrong not in str(body) and ENGINE_TOKEN not in str(body)
