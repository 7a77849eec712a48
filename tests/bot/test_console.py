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
