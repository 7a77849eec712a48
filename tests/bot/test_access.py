"""Who gets answered: groups only when addressed, strangers refused with their id, buttons
checked as strictly as commands."""

from __future__ import annotations

import asyncio
import dataclasses

from tests.bot.conftest import GROUP, OWNER, STRANGER, USER
from tests.fakes.telegram_api import BOT_USER, TOKEN


async def test_group_messages_need_a_mention_or_command_and_are_answered_in_their_topic(
    bot, telegram
):
    telegram.chat(GROUP, forum=True)
    telegram.send_text(USER, "大家好，今天吃什么", chat_id=GROUP, thread_id=7)
    telegram.send_text(USER, f"@{BOT_USER['username']} /cancel", chat_id=GROUP, thread_id=7)
    telegram.send_text(USER, "/cancel", chat_id=GROUP, thread_id=7)
    replies = await telegram.wait_for(
        lambda: (
            len(telegram.sent("sendMessage", GROUP)) >= 2 and telegram.sent("sendMessage", GROUP)
        )
    )
    await asyncio.sleep(0.5)
    assert all(c.params["message_thread_id"] == 7 for c in replies)
    texts = telegram.texts(GROUP)
    assert not any("吃什么" in text for text in texts)
    assert len(texts) == 2  # the chatter got no answer


async def test_a_stranger_is_refused_with_their_id(bot, telegram):
    telegram.send_text(STRANGER, "达达骑士在雪地里送快递")
    (text,) = await telegram.wait_for(lambda: telegram.texts(STRANGER))
    assert str(STRANGER) in text and "/allow" in text
    assert not telegram.sent("sendMediaGroup")


async def test_a_user_pressing_someone_elses_button_is_refused(bot, telegram):
    telegram.send_text(OWNER, f"/allow {STRANGER}")  # another user; strangers are refused first
    await telegram.wait_for(lambda: telegram.texts(OWNER))
    telegram.send_text(USER, "/history")
    await telegram.wait_for(lambda: telegram.texts(USER))
    core = bot.bot_data["core"]
    from bot.replies import Place
    from bot.store import JobRecord

    core.store.save_job(
        JobRecord(
            "job1",
            USER,
            Place(USER),
            "candidates",
            "雪地",
            {},
            "zh",
            seeds=[1, 2],
            delivered=True,
            state="done",
        )
    )
    message = telegram.sent("sendMessage", USER)[0].result
    telegram.press(STRANGER, message, "hd:job1:0")
    answer = await telegram.wait_for(lambda: telegram.sent("answerCallbackQuery"))
    assert "发起人" in answer[0].params["text"]
    await asyncio.sleep(0.3)
    assert not [c for c in telegram.calls if c.method == "sendPhoto"]


async def test_a_user_over_the_daily_quota_is_told_so_in_their_language(bot_config, telegram):
    from bot.app import build_application, running

    config = dataclasses.replace(bot_config, bot=dataclasses.replace(bot_config.bot, daily_quota=1))
    async with running(build_application(config, TOKEN)):
        telegram.send_text(USER, "a rider in the snow", language="en")
        await telegram.wait_for(lambda: telegram.texts(USER))  # the first one is acknowledged
        telegram.send_text(USER, "a rider in the rain", language="en")
        await telegram.wait_for(lambda: len(telegram.texts(USER)) >= 2)
    assert "Queued" in telegram.texts(USER)[0]
    assert "today's 1 jobs" in telegram.texts(USER)[1]
