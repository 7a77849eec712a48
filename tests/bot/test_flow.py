"""A user's whole trip in a private chat: request, acknowledgement, progress, candidates, HD."""

from __future__ import annotations

import io

from PIL import Image

from engine.diffusion import infotext
from tests.bot.conftest import USER
from tests.fakes.telegram_api import album_pictures


def png_info(data: bytes) -> dict[str, str]:
    return infotext.parse(infotext.read_png(data))


async def request_candidates(telegram, text="达达骑士在雪地里送快递，圣诞海报"):
    telegram.send_text(USER, text)
    album = await telegram.wait_for(lambda: telegram.sent("sendMediaGroup", USER))
    choose = await telegram.wait_for(
        lambda: [c for c in telegram.sent("sendMessage", USER) if "reply_markup" in c.params]
    )
    return album[0], choose[-1]


async def pick(telegram, choose, index: int) -> dict[str, str]:
    """Press candidate `index` under the choose message; the chosen keyboard's callback data
    by action (`{"hd": "hd:<job>:<n>", "var": ..., "edit": ...}`)."""
    data = choose.params["reply_markup"]["inline_keyboard"][0][index]["callback_data"]
    telegram.press(USER, choose.result, data)
    chosen = await telegram.wait_for(
        lambda: [c for c in telegram.sent("editMessageText", USER) if "已选" in c.params["text"]]
    )
    buttons = [b for row in chosen[-1].params["reply_markup"]["inline_keyboard"] for b in row]
    return {b["callback_data"].split(":")[0]: b["callback_data"] for b in buttons}


async def test_private_request_gets_ack_progress_and_four_candidates(bot, telegram):
    # 50 steps last long enough for a throttled progress edit however fast the machine is.
    album, _ = await request_candidates(telegram, "达达骑士在雪地里送快递，圣诞海报 --steps 50")
    ack = telegram.sent("sendMessage", USER)[0]
    assert "触发词" in ack.params["text"] or "收到" in ack.params["text"]
    assert "排队" in ack.params["text"]

    def edits() -> list:
        calls = telegram.sent("editMessageText", USER)
        return [c for c in calls if c.params["message_id"] == ack.result["message_id"]]

    # the status line says done after the pictures are out
    await telegram.wait_for(lambda: "✅" in edits()[-1].params["text"])
    assert any("🎨" in c.params["text"] for c in edits())  # progress
    pictures = album_pictures(album)
    assert len(pictures) == 4
    seeds = [png_info(png)["Seed"] for png, _ in pictures]
    assert len(set(seeds)) == 4
    assert [caption.split("种子 ")[1] for _, caption in pictures] == seeds


async def test_choosing_the_second_and_hd_gives_its_larger_poster_under_its_number(bot, telegram):
    album, choose = await request_candidates(telegram)
    png = album_pictures(album)[1][0]  # candidate #2
    seed = png_info(png)["Seed"]
    hd = (await pick(telegram, choose, 1))["hd"]
    telegram.press(USER, choose.result, hd)
    photo = (await telegram.wait_for(lambda: telegram.sent("sendPhoto", USER)))[0]
    document = (await telegram.wait_for(lambda: telegram.sent("sendDocument", USER)))[0]
    small = Image.open(io.BytesIO(png)).size
    large = Image.open(io.BytesIO(photo.files["photo"])).size
    assert large[0] > small[0] and large[1] > small[1]
    info = png_info(document.files["document"])
    assert info["Seed"] == seed
    assert "Hires upscale" in info or "Hires resize" in info
    assert seed in photo.params["caption"]
    assert "高清海报 #2" in photo.params["caption"]
    assert any("高清修复</b> #2" in text for text in telegram.texts(USER))


async def test_an_edit_that_says_change_to_swaps_the_style_instead_of_adding_one(bot, telegram):
    _, choose = await request_candidates(telegram, "达达骑士水彩风格在海边送快递 --steps 1")
    edit = (await pick(telegram, choose, 0))["edit"]
    acks_before = len([t for t in telegram.texts(USER) if "收到" in t])
    telegram.press(USER, choose.result, edit)
    await telegram.wait_for(lambda: any("改" in t for t in telegram.texts(USER)[-1:]))
    telegram.send_text(USER, "换成国潮风格")
    acks = await telegram.wait_for(
        lambda: [t for t in telegram.texts(USER) if "收到" in t][acks_before:]
    )
    assert "guochao" in acks[0] and "watercolor" not in acks[0]
    assert "beach" in acks[0]  # the rest of the request stays
