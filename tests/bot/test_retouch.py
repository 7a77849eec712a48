"""放大 and 修脸 under a delivered picture (the fake Bot API, the real engine on the tiny model):
放大 is always there and delivers the picture at twice its size once, with the buttons again;
修脸 appears when a face restoration model is installed in the engine's models/GFPGAN."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.bot.conftest import USER
from tests.bot.test_flow import pick, request_candidates
from tests.fakes.models import write_face_detector, write_tiny_restoreformer


def keyboard_data(call) -> dict[str, str]:
    rows = call.params["reply_markup"]["inline_keyboard"]
    return {b["callback_data"].split(":")[0]: b["callback_data"] for row in rows for b in row}


async def delivered(telegram, before: int):
    """The photo a retouch job sends (after the acknowledgement), once it is there."""
    photos = await telegram.wait_for(lambda: telegram.sent("sendPhoto", USER)[before:])
    return photos[0]


async def test_upscale_delivers_twice_the_size_once_with_the_buttons_again(bot, telegram):
    _, choose = await request_candidates(telegram, "达达骑士在雪地里送快递 --steps 1")
    buttons = await pick(telegram, choose, 0)
    assert {"up2", "up4"} <= set(buttons) and "faces" not in buttons  # no restorer installed
    before = len(telegram.sent("sendPhoto", USER))
    documents = len(telegram.sent("sendDocument", USER))
    telegram.press(USER, choose.result, buttons["up2"])
    photo = await delivered(telegram, before)
    assert Image.open(io.BytesIO(photo.files["photo"])).size == (128, 128)
    assert "128×128" in photo.params["caption"]
    assert set(keyboard_data(photo)) == {"up2", "up4"}  # upscale the result again
    file = (await telegram.wait_for(lambda: telegram.sent("sendDocument", USER)[documents:]))[0]
    assert Image.open(io.BytesIO(file.files["document"])).size == (128, 128)
    await bot.bot_data["core"].follower.wait_idle()
    assert len(telegram.sent("sendPhoto", USER)) == before + 1  # delivered exactly once
    # the result's own ×4 works from its button
    telegram.press(USER, photo.result, keyboard_data(photo)["up4"])
    again = await delivered(telegram, before + 1)
    assert Image.open(io.BytesIO(again.files["photo"])).size == (512, 512)


@pytest.fixture
def face_restorer(engine_config_file):
    """A face restorer and detector in the session engine's models/GFPGAN, for one test."""
    folder = engine_config_file.parent / "data" / "models" / "GFPGAN"
    files = [
        write_tiny_restoreformer(folder / "RestoreFormer.safetensors"),
        write_face_detector(
            folder / "face_detection_yunet.onnx", (64, 64), (0, 0, 8, 8), [(2, 2)] * 5
        ),
    ]
    yield folder
    for path in files:
        path.unlink()


async def test_fix_faces_is_offered_with_a_restorer_and_delivers_in_english(
    bot, telegram, face_restorer
):
    telegram.send_text(USER, "/lang en")
    await telegram.wait_for(lambda: any("English" in t for t in telegram.texts(USER)))
    _, choose = await request_candidates(telegram, "a rider in the snow --steps 1")
    buttons = await pick_en(telegram, choose)
    before = len(telegram.sent("sendPhoto", USER))
    telegram.press(USER, choose.result, buttons["faces"])
    photo = await delivered(telegram, before)
    assert photo.params["caption"].startswith("✨ Done · 64×64")
    assert set(keyboard_data(photo)) == {"up2", "up4", "faces"}


async def pick_en(telegram, choose) -> dict[str, str]:
    data = choose.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    telegram.press(USER, choose.result, data)
    chosen = await telegram.wait_for(
        lambda: [c for c in telegram.sent("editMessageText", USER) if "reply_markup" in c.params]
    )
    return keyboard_data(chosen[-1])
