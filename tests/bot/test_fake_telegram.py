"""The fake Bot API refuses what Telegram refuses, so a test passing against it means the bot's
messages would reach a real chat."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputMediaPhoto
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError

from tests.fakes.telegram_api import TOKEN

CHAT = 42


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def api(telegram):
    async with Bot(TOKEN, base_url=telegram.base_url, base_file_url=telegram.base_file_url) as bot:
        yield bot


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<b>bold", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", "Unexpected end tag"),
        ("<lora:dada:0.8> rider", 'Unsupported start tag "lora:dada:0.8"'),
        ("<span>x</span>", 'Unsupported start tag "span"'),
        ("salt & pepper", "Character entity expected"),
        ("1 < 2", "Unsupported start tag"),
    ],
)
async def test_html_that_telegram_cannot_parse_is_refused(api, text, reason):
    with pytest.raises(BadRequest, match="an't parse entities") as refused:
        await api.send_message(CHAT, text, parse_mode=ParseMode.HTML)
    assert reason.lower() in str(refused.value).lower()


async def test_telegrams_own_html_and_entities_pass_and_count_as_shown(api, telegram):
    text = '<b>a</b> <a href="https://x.org">l</a> <span class="tg-spoiler">s</span> &lt;&amp;&#39;'
    await api.send_message(CHAT, text, parse_mode=ParseMode.HTML)
    # 4096 shown characters pass however long the markup is; one more does not
    await api.send_message(CHAT, "<b>" + "&amp;" * 4096 + "</b>", parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await api.send_message(CHAT, "字" * 4097)
    assert len(telegram.texts(CHAT)) == 2


async def test_captions_callback_data_and_albums_keep_telegrams_limits(api):
    with pytest.raises(BadRequest, match=r"(?i)caption is too long"):
        await api.send_photo(CHAT, png(), caption="x" * 1025)
    await api.send_photo(CHAT, png(), caption="<i>" + "x" * 1024 + "</i>", parse_mode="HTML")
    button = InlineKeyboardButton("go", callback_data="x" * 65)
    with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
        await api.send_message(CHAT, "pick", reply_markup=InlineKeyboardMarkup([[button]]))
    for count in (1, 11):
        with pytest.raises(BadRequest, match="2-10"):
            await api.send_media_group(CHAT, [InputMediaPhoto(png()) for _ in range(count)])
    assert len(await api.send_media_group(CHAT, [InputMediaPhoto(png()) for _ in range(10)])) == 10


async def test_an_unknown_method_gets_telegrams_404(api, telegram):
    with pytest.raises(TelegramError, match=r"(?i)not found"):
        await api.do_api_request("sendPoster", api_kwargs={"chat_id": CHAT})
    (call,) = [c for c in telegram.calls if c.method == "sendPoster"]
    assert call.result == {"ok": False, "error_code": 404, "description": "Not Found"}
