"""Admins train the mascot's LoRA from chat, against the real engine: a dataset zip gets its
Chinese report, a broken rule is refused in the admin's language, /train shows progress, loss
curves and samples, then /versions, /promote and /export. Others are refused."""

from __future__ import annotations

import dataclasses
import io

from PIL import Image

from bot.app import build_application, running
from tests.bot.conftest import OWNER, STRANGER, USER
from tests.fakes.telegram_api import TOKEN
from tests.training.conftest import mascot_images, mascot_zip

QUICK = (
    "epochs=2 repeats=1 batch_size=1 resolution=64 min_bucket_reso=64 max_bucket_reso=128"
    " network_dim=4 network_alpha=4 sample_steps=2 unet_lr=1e-3"
)


def said(telegram, chat_id: int, words: str) -> list[str]:
    texts = telegram.texts(chat_id) + [
        c.params["text"] for c in telegram.sent("editMessageText", chat_id)
    ]
    return [text for text in texts if words in text]


async def upload_dataset(telegram) -> str:
    telegram.send_text(OWNER, "dada", document=mascot_zip(), filename="dada.zip")
    (report,) = await telegram.wait_for(lambda: said(telegram, OWNER, "数据集 dada"))
    return report


async def test_an_admins_zip_gets_a_chinese_report_and_others_are_refused(bot, telegram):
    report = await upload_dataset(telegram)
    assert "3 张图" in report and "白底IP图 1" in report
    telegram.send_text(USER, "/train dada")
    telegram.send_text(STRANGER, "/versions")
    await telegram.wait_for(lambda: said(telegram, USER, "只有管理员"))
    await telegram.wait_for(lambda: said(telegram, STRANGER, str(STRANGER)))
    telegram.send_text(USER, "dada", document=mascot_zip(), filename="dada.zip")
    telegram.send_text(OWNER, "evil", document=b"\x80\x04", filename="evil.ckpt")
    await telegram.wait_for(lambda: said(telegram, OWNER, "pickle"))
    assert not said(telegram, USER, "数据集")  # a user's zip is not a dataset upload


async def test_a_broken_rule_is_refused_with_the_rule(bot, telegram):
    await upload_dataset(telegram)
    telegram.send_text(OWNER, "/train dada network_dim=8 network_alpha=16")
    (refusal,) = await telegram.wait_for(lambda: said(telegram, OWNER, "不符合规则"))
    assert "network_alpha 要大于 0，且不能超过 network_dim" in refusal
    assert "network_dim (8)" in refusal  # the engine's exact values follow


async def test_training_from_chat_across_a_restart_to_promote_grid_and_export(bot_config, telegram):
    async with running(build_application(bot_config, TOKEN)):
        await upload_dataset(telegram)
        telegram.send_text(OWNER, f"/train dada {QUICK}")
        await telegram.wait_for(lambda: said(telegram, OWNER, "🧠 训练中 第 "), timeout=240)
    # The bot restarts mid-training: the new one picks the training up where the chat left it.
    async with running(build_application(bot_config, TOKEN)):
        await telegram.wait_for(lambda: said(telegram, OWNER, "下一步"), timeout=240)
        assert len(said(telegram, OWNER, "✅ 训练完成：<b>dada-v1</b>（2 轮")) == 1
        curves = [
            c for c in telegram.sent("sendPhoto", OWNER) if "loss 曲线" in c.params["caption"]
        ]
        assert [c.params["caption"][:7] for c in curves] == ["📉 第 1 轮", "📉 第 2 轮"]
        assert len(telegram.sent("sendMediaGroup", OWNER)) == 2  # samples of each epoch, once

        telegram.send_text(OWNER, "/versions dada")
        (listing,) = await telegram.wait_for(lambda: said(telegram, OWNER, "LoRA 版本"))
        assert "dada-v1" in listing and "dim 4" in listing
        assert "<code>dada-v1</code>" in listing and "&lt;" not in listing  # markup, not text
        telegram.send_text(OWNER, "/promote dada v1")
        await telegram.wait_for(lambda: said(telegram, OWNER, "现在使用 <b>dada-v1</b>"))
        telegram.send_text(OWNER, "/xyz dada weights=0,1 seeds=7,8")
        (grid,) = await telegram.wait_for(
            lambda: [c for c in telegram.sent("sendPhoto", OWNER) if "XYZ" in c.params["caption"]]
        )
        assert "XYZ 对比图：weights × seeds" in grid.params["caption"]
        width, height = Image.open(io.BytesIO(grid.files["photo"])).size
        assert width > 2 * 64 and height > 2 * 64  # 2 × 2 cells of 64 px, with labels
        telegram.send_text(OWNER, "/export dada-v1")
        (document,) = await telegram.wait_for(lambda: telegram.sent("sendDocument", OWNER))
    assert document.files["document"][:1] != b"" and "dada-v1" in document.params["caption"]


async def test_a_zip_with_no_ip_configured_gets_a_polite_answer(bot_config, telegram):
    async with running(build_application(dataclasses.replace(bot_config, ips=[]), TOKEN)):
        telegram.send_text(OWNER, "", document=mascot_zip(), filename="set.zip")
        (answer,) = await telegram.wait_for(lambda: said(telegram, OWNER, "还没有配置任何 IP"))
    assert "[[ips]]" in answer


def image_bytes(image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


async def test_a_dataset_session_survives_a_restart_and_warns_about_compressed_photos(
    bot_config, telegram
):
    (white, white_caption), (scene, scene_caption), (plain, plain_caption) = [
        (image, caption) for _, image, caption in mascot_images(1)
    ]
    async with running(build_application(bot_config, TOKEN)):
        telegram.send_text(OWNER, "/dataset new dada")
        await telegram.wait_for(lambda: said(telegram, OWNER, "开始为 <b>dada</b> 收集"))
        png = image_bytes(white, "PNG")
        telegram.send_text(OWNER, white_caption, document=png, filename="white.png")
        await telegram.wait_for(lambda: said(telegram, OWNER, "已有 1 张图"))
    # The bot restarts halfway through the upload; the admin carries on.
    async with running(build_application(bot_config, TOKEN)):
        telegram.send_text(OWNER, "/dataset new dada")  # by mistake: the files so far stay
        await telegram.wait_for(lambda: said(telegram, OWNER, "继续发文件即可"))
        png = image_bytes(scene, "PNG")
        telegram.send_text(OWNER, scene_caption, document=png, filename="scene.png")
        await telegram.wait_for(lambda: said(telegram, OWNER, "已有 2 张图"))
        telegram.send_text(OWNER, plain_caption, photo=image_bytes(plain, "JPEG"))
        (warning,) = await telegram.wait_for(lambda: said(telegram, OWNER, "被压缩的照片"))
        assert "已有 3 张图" in warning
        telegram.send_text(OWNER, "/dataset done")
        (report,) = await telegram.wait_for(lambda: said(telegram, OWNER, "数据集 dada"))
    assert "3 张图" in report and "白底IP图 1" in report
    telegram.send_text(OWNER, "/dataset done")  # the session is closed now
    async with running(build_application(bot_config, TOKEN)):
        await telegram.wait_for(lambda: said(telegram, OWNER, "你还没有开始收集数据集"))


async def test_dataset_reports_and_refusals_speak_the_admins_language(bot, telegram):
    telegram.send_text(OWNER, "dada", document=mascot_zip(), filename="dada.zip", language="en")
    (report,) = await telegram.wait_for(lambda: said(telegram, OWNER, "Dataset dada: 3 images"))
    assert "mascot on white 1" in report
    hostile = mascot_zip(extra=[("../evil.png", b"x")])
    telegram.send_text(OWNER, "/lang zh")
    await telegram.wait_for(lambda: said(telegram, OWNER, "中文"))
    telegram.send_text(OWNER, "dada", document=hostile, filename="dada.zip")
    (refusal,) = await telegram.wait_for(lambda: said(telegram, OWNER, "数据集没有收下"))
    assert "../evil.png：路径跑出了数据集文件夹" in refusal
