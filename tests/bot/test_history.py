"""A user's jobs as they see them: /queue, /cancel, /history and variations."""

from __future__ import annotations

from tests.bot.conftest import USER
from tests.bot.test_flow import pick, request_candidates
from tests.fakes.telegram_api import visible_text


def shown(telegram, chat_id: int) -> list[str]:
    """Every text the user has seen (messages and edits), as Telegram renders it."""
    texts = telegram.texts(chat_id) + [
        c.params["text"] for c in telegram.sent("editMessageText", chat_id)
    ]
    return [visible_text(text) for text in texts]


async def test_queue_shows_the_job_as_text_not_as_escaped_markup(bot, telegram):
    telegram.send_text(USER, "达达骑士在雪地里送快递 --steps 50")
    await telegram.wait_for(lambda: telegram.texts(USER))
    telegram.send_text(USER, "/queue")
    (listing,) = await telegram.wait_for(
        lambda: [t for t in shown(telegram, USER) if "我的任务" in t]
    )
    assert "<code>" not in listing and "&lt;" not in listing
    assert any(mark in listing for mark in ("⏳", "🎨"))


async def test_a_cancelled_job_says_so_once_and_leaves_the_queue(bot, telegram):
    # a poster big enough to be still drawing when the cancel comes (an idle worker starts at once)
    telegram.send_text(USER, "达达骑士在雪地里送快递，竖版 --steps 50")
    await telegram.wait_for(lambda: telegram.texts(USER))
    telegram.send_text(USER, "/cancel")
    await telegram.wait_for(lambda: any("已取消 1 个任务" in t for t in shown(telegram, USER)))
    await telegram.wait_for(lambda: any("⏹ 已取消" in t for t in shown(telegram, USER)))
    telegram.send_text(USER, "/queue")
    await telegram.wait_for(
        lambda: any("没有排队或进行中的任务" in t for t in shown(telegram, USER))
    )
    assert not any("失败" in t for t in shown(telegram, USER))
    assert sum("取消" in t for t in telegram.texts(USER)) == 1  # one message says it
    assert not telegram.sent("sendMediaGroup", USER)


async def test_variations_are_headed_as_variations_and_history_shows_their_seeds(bot, telegram):
    _, choose = await request_candidates(telegram)
    variations = (await pick(telegram, choose, 0))["var"]
    telegram.press(USER, choose.result, variations)
    albums = await telegram.wait_for(lambda: telegram.sent("sendMediaGroup", USER)[1:])
    ack = [t for t in shown(telegram, USER) if t.startswith("变体")]
    assert ack and not any(t.startswith("重新生成") for t in shown(telegram, USER))
    captions = [item["caption"] for item in albums[0].params["media"]]
    subseeds = [caption.rsplit("变体种子 ", 1)[1] for caption in captions]
    telegram.send_text(USER, "/history")
    (history,) = await telegram.wait_for(
        lambda: [t for t in shown(telegram, USER) if t.startswith("最近的任务")]
    )
    assert f"变体种子 {', '.join(subseeds)}" in history
