"""What the prompt builder noted reaches a Chinese chat in Chinese, never as builder English."""

from __future__ import annotations

from tests.bot.conftest import USER


async def test_untranslated_words_and_the_default_ip_are_noted_in_chinese(bot, telegram):
    telegram.send_text(USER, "在火星上喝奶茶，旁边有只㺢㺢 --steps 1")
    acks = await telegram.wait_for(lambda: [t for t in telegram.texts(USER) if "备注" in t])
    assert "这些词还不认识" in acks[0] and "㺢㺢" in acks[0] and "默认" in acks[0]
    assert "not translated" not in acks[0] and "default IP" not in acks[0]
    telegram.send_text(USER, "/cancel")
    await telegram.wait_for(lambda: any("已取消" in t for t in telegram.texts(USER)))
