"""The Telegram Application in webhook mode: Telegram's calls must carry the secret token."""

from __future__ import annotations

import dataclasses

import aiohttp

from bot.app import build_application, running, webhook_secret
from tests.bot.conftest import USER, free_port
from tests.fakes.telegram_api import TOKEN

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


async def test_webhook_refuses_a_wrong_secret_and_answers_the_right_one(bot_config, telegram):
    port = free_port()
    telegram_config = dataclasses.replace(
        bot_config.telegram,
        mode="webhook",
        webhook_url="https://posters.example.com/telegram",
        webhook_listen="127.0.0.1",
        webhook_port=port,
    )
    config = dataclasses.replace(bot_config, telegram=telegram_config)
    message = telegram.send_text(USER, "达达骑士在雪地里送快递")  # as Telegram would post it
    hook = f"http://127.0.0.1:{port}/"
    async with running(build_application(config, TOKEN)), aiohttp.ClientSession() as http:
        (registered,) = telegram.sent("setWebhook")
        assert registered.params["url"] == telegram_config.webhook_url
        forged = {SECRET_HEADER: "not-the-secret"}
        async with http.post(hook, json={"update_id": 1, "message": message}, headers=forged) as r:
            assert r.status == 403
        genuine = {SECRET_HEADER: webhook_secret(TOKEN)}
        async with http.post(hook, json={"update_id": 2, "message": message}, headers=genuine) as r:
            assert r.status == 200
        await telegram.wait_for(lambda: telegram.texts(USER))
    assert not telegram.sent("getUpdates")  # webhook mode never polls
    assert sum("收到" in text for text in telegram.texts(USER)) == 1  # answered once
