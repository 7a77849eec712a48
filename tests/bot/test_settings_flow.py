"""/settings and /template through Telegram: what a user changes reaches their next job."""

from __future__ import annotations

from bot.features.settings import user_settings
from bot.settings import CHOICES
from tests.bot.conftest import USER


def labels_of(call) -> list[str]:
    keyboard = call.params.get("reply_markup", {}).get("inline_keyboard", [])
    return [b["text"] for row in keyboard for b in row]


def keyboard_of(call) -> list[str]:
    return [
        b["callback_data"] for row in call.params["reply_markup"]["inline_keyboard"] for b in row
    ]


async def ack_text(telegram, request: str) -> str:
    before = len(telegram.texts(USER))
    telegram.send_text(USER, request)
    texts = await telegram.wait_for(
        lambda: [t for t in telegram.texts(USER)[before:] if "收到" in t]
    )
    telegram.send_text(USER, "/cancel")  # the job itself is not what these tests look at
    await telegram.wait_for(lambda: any("已取消" in t for t in telegram.texts(USER)[before:]))
    return texts[0]


async def test_settings_changes_reach_the_next_job(bot, telegram):
    telegram.send_text(USER, "/settings")
    menu = (await telegram.wait_for(lambda: telegram.sent("sendMessage", USER)))[0]
    steps_button = next(d for d in keyboard_of(menu) if d.endswith(":steps"))
    telegram.press(USER, menu.result, steps_button)
    await telegram.wait_for(lambda: telegram.sent("editMessageText", USER))
    index = CHOICES["steps"].index("15")
    telegram.press(USER, menu.result, f"{steps_button}:{index}")
    await telegram.wait_for(
        lambda: any("步数：15" in labels_of(c) for c in telegram.sent("editMessageText", USER))
    )
    assert "15 步" in await ack_text(telegram, "达达骑士在海边")


async def test_templates_round_trip(bot, telegram):
    core = bot.bot_data["core"]
    telegram.send_text(USER, "/seed 4242")
    await telegram.wait_for(lambda: any("4242" in t for t in telegram.texts(USER)))
    telegram.send_text(USER, "/template save 圣诞")
    await telegram.wait_for(lambda: any("圣诞" in t for t in telegram.texts(USER)))
    telegram.send_text(USER, "/seed off")
    await telegram.wait_for(lambda: user_settings(core, USER).seed is None)
    assert "4242" not in await ack_text(telegram, "达达骑士在海边")
    telegram.send_text(USER, "/template list")
    await telegram.wait_for(
        lambda: any("我的模板" in t and "圣诞" in t for t in telegram.texts(USER))
    )
    telegram.send_text(USER, "/template use 圣诞")
    await telegram.wait_for(lambda: any("已换用" in t for t in telegram.texts(USER)))
    assert "种子 4242" in await ack_text(telegram, "达达骑士在海边")
