"""Pictures in chat: a photo with a caption, a reply to a photo, a reply to one of our results,
and the "更像原图 / 更自由" buttons — against the fake Bot API and a real engine."""

from __future__ import annotations

import hashlib
import io

from PIL import Image, ImageDraw

from engine.diffusion import infotext
from tests.bot.conftest import USER
from tests.fakes.telegram_api import album_pictures


def png_info(data: bytes) -> dict[str, str]:
    return infotext.parse(infotext.read_png(data))


def photo_bytes(size=(96, 64)) -> bytes:
    image = Image.new("RGB", size, (230, 230, 230))
    ImageDraw.Draw(image).rectangle((30, 10, 60, 54), outline=(0, 0, 0), width=3)  # a sketch
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


async def candidates(telegram, already: int = 0):
    album = await telegram.wait_for(lambda: telegram.sent("sendMediaGroup", USER)[already:] or None)
    choose = await telegram.wait_for(
        lambda: (
            [
                c
                for c in telegram.sent("sendMessage", USER)
                if "reply_markup" in c.params and "选" in c.params["text"]
            ][already:]
            or None
        )
    )
    return album_pictures(album[0]), choose[0]


def buttons(message) -> dict[str, str]:
    rows = message.params["reply_markup"]["inline_keyboard"]
    return {b["text"]: b["callback_data"] for row in rows for b in row}


async def test_a_photo_with_a_caption_is_drawn_from_in_its_shape(bot, telegram):
    telegram.send_text(USER, "达达骑士站在这里，圣诞海报，来2张 --steps 3", photo=photo_bytes())
    pictures, choose = await candidates(telegram)
    assert len(pictures) == 2
    ack = telegram.texts(USER)[0]
    assert "照着你发的图画" in ack and "0.55" in ack
    info = png_info(pictures[0][0])
    assert info["Denoising strength"] == "0.55" and "Init image hash" in info
    width, height = Image.open(io.BytesIO(pictures[0][0])).size
    assert width > height  # the photo's 3:2 kept, not the default portrait
    keyboard = buttons(choose)
    assert keyboard["🖼 更像原图"].startswith("closer:") and keyboard["🎨 更自由"].startswith(
        "freer:"
    )


async def test_a_photo_alone_waits_for_a_reply_with_the_request(bot, telegram):
    photo = telegram.send_text(USER, "", photo=photo_bytes((64, 96)))
    await telegram.wait_for(lambda: any("收到图片" in text for text in telegram.texts(USER)))
    assert not telegram.sent("sendMediaGroup", USER)  # nothing drawn yet
    telegram.send_text(USER, "达达骑士在海边 来2张 --steps 3", reply_to=photo)
    pictures, _ = await candidates(telegram)
    info = png_info(pictures[0][0])
    assert "Init image hash" in info
    width, height = Image.open(io.BytesIO(pictures[0][0])).size
    assert height > width


async def test_more_like_the_picture_steps_the_strength_down(bot, telegram):
    telegram.send_text(USER, "达达骑士 来2张 --steps 3", photo=photo_bytes())
    _, choose = await candidates(telegram)
    telegram.press(USER, choose.result, buttons(choose)["🖼 更像原图"])
    pictures, second = await candidates(telegram, already=1)
    assert png_info(pictures[0][0])["Denoising strength"] == "0.4"
    telegram.press(USER, second.result, buttons(second)["🎨 更自由"])
    pictures, _ = await candidates(telegram, already=2)
    assert png_info(pictures[0][0])["Denoising strength"] == "0.55"


async def test_a_reply_to_one_of_our_results_draws_from_it(bot, telegram):
    telegram.send_text(USER, "达达骑士在雪地里 来2张 --steps 3")
    pictures, _ = await candidates(telegram)
    shown = telegram.sent("sendMediaGroup", USER)[0].result[0]
    telegram.send_text(USER, "改成夏天的海边 来2张 --steps 3", reply_to=shown)
    again, _ = await candidates(telegram, already=1)
    first = Image.open(io.BytesIO(pictures[0][0]))
    info = png_info(again[0][0])
    assert info["Init image hash"] == hashlib.md5(first.convert("RGB").tobytes()).hexdigest()


async def test_a_file_that_is_not_a_picture_is_refused_in_words(bot, telegram):
    telegram.send_text(USER, "", document=b"GIF89a" + b"\0" * 64, filename="x.jpg")
    text = await telegram.wait_for(
        lambda: [t for t in telegram.texts(USER) if "PNG、JPEG 或 WEBP" in t]
    )
    assert "Traceback" not in text[0] and "inputs" not in text[0]


async def test_a_sketch_becomes_a_poster_laid_out_by_controlnet(
    bot, telegram, engine_config_file, tiny_model
):
    """ "按这个草图": with no ControlNet installed the chat says so and draws from the picture;
    once one is in models/ControlNet, the sketch is its control map (a fresh txt2img, the
    mascot's trigger and LoRA as usual, the sketch's shape kept)."""
    from diffusers import UNet2DConditionModel

    from posterbot.config import load_config
    from tests.fakes.models import write_tiny_controlnet

    telegram.send_text(USER, "按这个草图，达达骑士在海边 来2张 --steps 3", photo=photo_bytes())
    pictures, _ = await candidates(telegram)
    assert "还没装构图用的 ControlNet 模型" in telegram.texts(USER)[0]
    assert "Init image hash" in png_info(pictures[0][0])

    engine = load_config(engine_config_file, environ={})
    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet")
    model = write_tiny_controlnet(unet, engine.controlnet_dir / "control_scribble_tiny.safetensors")
    try:
        telegram.send_text(USER, "按这个草图，达达骑士在海边 来2张 --steps 3", photo=photo_bytes())
        pictures, _ = await candidates(telegram, already=1)
        ack = [text for text in telegram.texts(USER) if "按你的草图构图画" in text]
        assert ack and "control_scribble_tiny" in ack[0]
        info = png_info(pictures[0][0])
        assert "Init image hash" not in info
        assert (
            "Module: invert" in info["ControlNet 0"]
            and "control_scribble_tiny" in info["ControlNet 0"]
        )
        assert "dadaknight" in info["Prompt"] and "<lora:dada_lora" in info["Prompt"]
        width, height = Image.open(io.BytesIO(pictures[0][0])).size
        assert width > height
    finally:
        model.unlink()


async def test_a_pose_without_a_pose_detector_follows_the_outlines_and_says_so(
    bot, telegram, engine_config_file, tiny_model
):
    from diffusers import UNet2DConditionModel

    from posterbot.config import load_config
    from tests.fakes.models import write_tiny_controlnet

    engine = load_config(engine_config_file, environ={})
    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet")
    model = write_tiny_controlnet(unet, engine.controlnet_dir / "control_canny_tiny.safetensors")
    try:
        telegram.send_text(USER, "照这个姿势画达达骑士 来2张 --steps 3", photo=photo_bytes())
        pictures, _ = await candidates(telegram)
        ack = telegram.texts(USER)[0]
        assert "还没装姿势识别" in ack and "参考你这张图的构图画" in ack
        assert "Module: canny" in png_info(pictures[0][0])["ControlNet 0"]
    finally:
        model.unlink()


async def test_a_pose_with_the_pose_detector_installed_is_drawn_by_openpose(
    bot, telegram, engine_config_file, tiny_model
):
    from diffusers import UNet2DConditionModel

    from posterbot.config import load_config
    from tests.fakes.models import write_openpose_annotator, write_tiny_controlnet

    engine = load_config(engine_config_file, environ={})
    unet = UNet2DConditionModel.from_pretrained(tiny_model / "unet")
    canny = write_tiny_controlnet(unet, engine.controlnet_dir / "control_canny_tiny.safetensors")
    pose = write_tiny_controlnet(unet, engine.controlnet_dir / "control_openpose_tiny.safetensors")
    detector = write_openpose_annotator(
        engine.controlnet_dir / "annotators" / "body_pose_model.safetensors"
    )
    try:
        telegram.send_text(USER, "照这个姿势画达达骑士 来2张 --steps 3", photo=photo_bytes())
        pictures, _ = await candidates(telegram)
        ack = telegram.texts(USER)[0]
        assert "照这张图的姿势画" in ack and "control_openpose_tiny" in ack
        assert "还没装姿势识别" not in ack
        control = png_info(pictures[0][0])["ControlNet 0"]
        assert "Module: openpose" in control and "control_openpose_tiny" in control
    finally:
        for path in (canny, pose, detector):
            path.unlink()
