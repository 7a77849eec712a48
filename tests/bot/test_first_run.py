"""A first install: the mascot's LoRA is configured but not trained yet. Posters still come,
drawn without it, and the chat is told once how to train or register it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bot.app import build_application, running
from bot.console import run_console
from engine.diffusion import infotext
from engine.service.client import EngineClient
from posterbot.config import IPConfig
from tests.bot.conftest import USER
from tests.fakes.telegram_api import TOKEN, album_pictures


@pytest.fixture
def untrained_config(bot_config, tmp_path):
    """The mascot names a LoRA file that models/Lora does not have."""
    ip = IPConfig(name="dada", trigger="dadaknight", lora="dada_v3", aliases=["达达"])
    bot = dataclasses.replace(bot_config.bot, console_output_dir=str(tmp_path / "out"))
    return dataclasses.replace(bot_config, ips=[ip], bot=bot)


async def test_an_untrained_lora_draws_without_it_and_tells_the_admin_how_once(
    untrained_config, capsys
):
    script = ["达达在雪地里送快递", "达达在海边冲浪"]
    async with EngineClient(base_url=untrained_config.bot.engine_url) as engine:
        await run_console(untrained_config, engine, iter(script))
    printed = capsys.readouterr().out
    assert printed.count("✅ 完成") == 2  # both requests gave candidates
    assert printed.count("还没有训练好") == 1  # the how-to once per chat ...
    assert "/dataset new dada" in printed and "/train dada" in printed and ".safetensors" in printed
    assert "dada 的 LoRA 还没有，先不带 LoRA 画" in printed  # ... then a short reminder
    assert "找不到 LoRA" not in printed and "models/Lora" not in printed
    saved = sorted(Path(untrained_config.bot.console_output_dir).glob("*.png"))
    assert len(saved) == 8
    for path in saved:
        info = infotext.parse(infotext.read_png(path.read_bytes()))
        assert "Lora hashes" not in info and "<lora:" not in info["Prompt"]
        assert info["Prompt"].startswith("dadaknight")  # the trigger word stays


async def test_a_user_is_told_to_ask_an_admin_and_the_picture_has_no_lora(
    untrained_config, telegram
):
    application = build_application(untrained_config, TOKEN)
    async with running(application):
        telegram.send_text(USER, "达达骑士在雪地里送快递")
        album = await telegram.wait_for(lambda: telegram.sent("sendMediaGroup", USER))
    ack = telegram.texts(USER)[0]
    assert "还没有训练好" in ack and "请管理员训练或上传" in ack
    assert "/train" not in ack  # users cannot train: no command they could not use
    for png, _ in album_pictures(album[0]):
        info = infotext.parse(infotext.read_png(png))
        assert "Lora hashes" not in info and info["Prompt"].startswith("dadaknight")


async def test_a_lora_typed_in_a_webui_prompt_is_still_refused_by_name(untrained_config, capsys):
    async with EngineClient(base_url=untrained_config.bot.engine_url) as engine:
        await run_console(
            untrained_config, engine, iter(["dadaknight, a rider <lora:dada_v3:0.8>"])
        )
    printed = capsys.readouterr().out
    assert "找不到 LoRA「dada_v3」" in printed and "还没有训练好" not in printed
