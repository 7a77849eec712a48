"""`posterbot run`: the engine on loopback and the bot (or, without a token, the console) in one
process, the bot talking to the engine over HTTP like any other client.

The wiring package may import every layer; it does so inside the command, so `posterbot --help`
stays instant and torch loads only when the engine starts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os

from posterbot.config import Config

LOOPBACK = "127.0.0.1"  # `posterbot run` keeps its engine off the network


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run", help="engine + bot (or console without a token)", description=run_command.__doc__
    )
    run.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace, config: Config) -> int:
    """The main job in one process: the engine on loopback, and the bot (or, without a token,
    the console) talking to it over HTTP like any other client."""
    from bot.cli import TOKEN_ENV, console, telegram_bot
    from engine.service.lifecycle import running_service

    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"{TOKEN_ENV} is not set: starting the console instead of the Telegram bot.")

    async def engine_and_bot() -> None:
        async with running_service(config, LOOPBACK, config.engine.port) as url:
            local = dataclasses.replace(config, bot=dataclasses.replace(config.bot, engine_url=url))
            await (telegram_bot(local, token) if token else console(local))

    asyncio.run(engine_and_bot())
    return 0
