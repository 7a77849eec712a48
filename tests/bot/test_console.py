"""`posterbot console` against a long-running engine: every session gets the jobs it asked for."""

from __future__ import annotations

import dataclasses
import re

from bot.console import run_console
from engine.service.client import EngineClient


async def test_a_second_console_session_is_not_answered_with_the_first_ones_job(
    bot_config, tmp_path, capsys
):
    # Console message ids restart at 1 every session; the engine keeps every job it has seen.
    seeds = []
    for seed in (1111, 2222):
        config = dataclasses.replace(
            bot_config, bot=dataclasses.replace(bot_config.bot, console_output_dir=str(tmp_path))
        )
        engine = EngineClient(base_url=bot_config.bot.engine_url)
        try:
            await run_console(config, engine, iter([f"达达骑士在雪地里送快递 --seed {seed}"]))
        finally:
            await engine.close()
        printed = capsys.readouterr().out
        seeds.append(sorted({int(s) for s in re.findall(r"种子 (\d+)", printed)}))
    assert seeds == [[1111, 1112, 1113, 1114], [2222, 2223, 2224, 2225]]


def png_with_parameters(path) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a rider\nSteps: 4, Sampler: Euler a, CFG scale: 7, Seed: 4321")
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)


async def test_the_console_is_the_same_conversation_admin_commands_and_files_included(
    bot_config, tmp_path, capsys
):
    from tests.training.conftest import mascot_zip

    (tmp_path / "dada.zip").write_bytes(mascot_zip())
    png_with_parameters(tmp_path / "poster.png")
    config = dataclasses.replace(
        bot_config, bot=dataclasses.replace(bot_config.bot, console_output_dir=str(tmp_path))
    )
    script = [
        f"/send {tmp_path / 'dada.zip'}",
        "/versions",
        "/train status",
        f"/info {tmp_path / 'poster.png'}",
        f"/send {tmp_path / 'poster.png'}",
        f"/send {tmp_path / 'missing.zip'}",
        "/xyz dada weights=0,1 seeds=7,8",
    ]
    async with EngineClient(base_url=bot_config.bot.engine_url) as engine:
        await run_console(config, engine, iter(script))
    printed = capsys.readouterr().out
    assert "数据集 dada" in printed and "3 张图" in printed  # the zip became a dataset
    assert "LoRA 版本" in printed and "dada" in printed
    assert "现在没有排队或进行中的训练" in printed
    assert printed.count("Seed: 4321") == 2  # /info PATH and /send PATH read the PNG
    assert "找不到文件" in printed
    assert "XYZ 对比图：weights × seeds" in printed
    (grid,) = re.findall(r"(/\S+xyz\.png)$", printed, re.MULTILINE)
    assert grid.startswith(str(tmp_path))  # the grid saved as a file
