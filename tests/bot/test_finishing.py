"""Finished posters in the chat: a request with a title gets finished candidates at the channel's
size; 改标题, 换尺寸 and 加标题 lay the same picture out again without a new engine job; SVG is
an editable file."""

from __future__ import annotations

import io
from xml.etree import ElementTree

from PIL import Image

from bot.replies import engine_user
from engine.service.client import EngineClient
from poster.output import read_poster_chunk
from prompts.sizes import channel_target
from tests.bot.conftest import USER
from tests.bot.test_flow import pick, request_candidates
from tests.fakes.telegram_api import album_pictures

TITLED = "达达骑士在雪地里送快递，圣诞海报，标题「圣诞快乐」，小红书 --steps 1"


async def jobs_of_user(bot_config) -> int:
    async with EngineClient(bot_config.bot.engine_url) as engine:
        return len(await engine.jobs(user=engine_user(USER)))


async def press_and_wait(telegram, message, data: str, method: str):
    """Press a button; the first `method` call the press brings."""
    before = len(telegram.sent(method, USER))
    telegram.press(USER, message, data)
    return (await telegram.wait_for(lambda: telegram.sent(method, USER)[before:]))[0]


async def retitle(telegram, message, data: str, title: str):
    """Press 改标题 / 加标题 and answer with `title`: the new poster's photo."""
    await press_and_wait(telegram, message, data, "sendMessage")  # the question
    before = len(telegram.sent("sendPhoto", USER))
    telegram.send_text(USER, title)
    return (await telegram.wait_for(lambda: telegram.sent("sendPhoto", USER)[before:]))[0]


def size_and_title(png: bytes) -> tuple[tuple[int, int], str]:
    return Image.open(io.BytesIO(png)).size, read_poster_chunk(png)["copy"]["title"]


async def test_a_titled_request_gets_finished_posters_laid_out_again_without_generation(
    bot, telegram, bot_config
):
    album, choose = await request_candidates(telegram, TITLED)
    main = channel_target("小红书")
    assert size_and_title(album_pictures(album)[0][0]) == ((main.width, main.height), "圣诞快乐")
    buttons = await pick(telegram, choose, 0)
    jobs = await jobs_of_user(bot_config)

    photo = await retitle(telegram, choose.result, buttons["title"], "新年快乐")
    assert size_and_title(photo.files["photo"]) == ((main.width, main.height), "新年快乐")
    layout = read_poster_chunk(photo.files["photo"])["layout"]
    photo = await press_and_wait(telegram, photo.result, buttons["layout"], "sendPhoto")
    following = {"top": "bottom", "bottom": "top", "side": "top"}[layout]  # portrait: no side
    assert read_poster_chunk(photo.files["photo"])["layout"] == following

    sizes = await press_and_wait(telegram, choose.result, buttons["resize"], "sendMessage")
    channels = [b for row in sizes.params["reply_markup"]["inline_keyboard"] for b in row]
    douyin = next(b["callback_data"] for b in channels if b["text"] == "抖音")
    photo = await press_and_wait(telegram, sizes.result, douyin, "sendPhoto")
    target = channel_target("抖音")
    assert size_and_title(photo.files["photo"]) == ((target.width, target.height), "新年快乐")

    svg = await press_and_wait(telegram, choose.result, buttons["svg"], "sendDocument")
    assert ElementTree.fromstring(svg.files["document"]).tag.endswith("svg")
    assert await jobs_of_user(bot_config) == jobs  # no generation for any of it


async def test_hd_of_a_poster_for_two_channels_sends_each_size_as_photo_and_file(bot, telegram):
    telegram.send_text(
        USER, "达达骑士在雪地里送快递，标题「圣诞快乐」，小红书和抖音各一张 --steps 1"
    )
    choose = await telegram.wait_for(
        lambda: [c for c in telegram.sent("sendMessage", USER) if "reply_markup" in c.params]
    )
    sizes = [(t.width, t.height) for t in (channel_target("小红书"), channel_target("抖音"))]
    (candidate,) = telegram.sent("sendPhoto", USER)  # "各一张": one picture, its main size shown
    assert size_and_title(candidate.files["photo"])[0] == sizes[0]
    telegram.press(USER, choose[-1].result, (await pick(telegram, choose[-1], 0))["hd"])
    await telegram.wait_for(lambda: len(telegram.sent("sendDocument", USER)) == 2)  # the last
    photos, files = telegram.sent("sendPhoto", USER)[1:], telegram.sent("sendDocument", USER)
    assert [size_and_title(call.files["photo"])[0] for call in photos] == sizes
    assert [size_and_title(call.files["document"])[0] for call in files] == sizes
    assert "reply_markup" in photos[0].params  # the finishing buttons under the first size


async def test_a_picture_without_copy_gets_a_title_added(bot, telegram):
    _, choose = await request_candidates(telegram, "达达骑士在雪地里送快递 --steps 1")
    buttons = await pick(telegram, choose, 0)
    assert {"layout", "resize", "svg"}.isdisjoint(buttons)  # nothing to lay out yet
    await press_and_wait(telegram, choose.result, buttons["title"], "sendMessage")
    telegram.send_text(USER, "长" * 41)  # too long: said with the numbers, nothing laid out
    await telegram.wait_for(lambda: any("41 个字，最多 40 个" in t for t in telegram.texts(USER)))
    photo = await retitle(telegram, choose.result, buttons["title"], "冬日送达")
    assert size_and_title(photo.files["photo"])[1] == "冬日送达"


async def test_a_finished_poster_sent_as_a_file_shows_its_copy_under_its_parameters(
    bot, telegram, tmp_path
):
    from poster.compose import Copy, compose_poster
    from poster.output import png_bytes
    from tests.poster.conftest import mascot_picture

    copy = Copy("圣诞快乐", "达达送福到家")
    finished = compose_poster(mascot_picture(), copy, 1242, 1660)
    data = png_bytes(finished, copy, parameters="dadaknight, snow\nSteps: 4, Seed: 7, Size: 64x64")
    telegram.send_text(USER, "", document=data, filename="poster.png")
    said = await telegram.wait_for(lambda: [t for t in telegram.texts(USER) if "海报" in t])
    assert "1242×1660" in said[0] and "标题：圣诞快乐" in said[0]
    assert any("dadaknight, snow" in t for t in telegram.texts(USER))  # the parameters, first
