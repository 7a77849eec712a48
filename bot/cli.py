"""`posterbot` subcommands owned by the bot: bot, console, run.

telegram is imported inside the commands, so `posterbot --help` works on any host.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys

from posterbot.config import Config

log = logging.getLogger(__name__)

TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
ENGINE_TOKEN_ENV = "POSTERBOT_ENGINE_TOKEN"
LOOPBACK = "127.0.0.1"  # `posterbot run` keeps its engine off the network


def register(commands: argparse._SubParsersAction) -> None:
    bot = commands.add_parser("bot", help="run the Telegram bot", description=bot_command.__doc__)
    bot.set_defaults(handler=bot_command)
    console = commands.add_parser(
        "console", help="chat with the bot in the terminal", description=console_command.__doc__
    )
    console.set_defaults(handler=console_command)
    run = commands.add_parser(
        "run", help="engine + bot (or console without a token)", description=run_command.__doc__
    )
    run.set_defaults(handler=run_command)


def bot_command(args: argparse.Namespace, config: Config) -> int:
    """Run the Telegram bot against the engine at [bot] engine_url (token: TELEGRAM_BOT_TOKEN)."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"posterbot bot: set {TOKEN_ENV} (from @BotFather)", file=sys.stderr)
        return 2
    asyncio.run(telegram_bot(config, token))
    return 0


def console_command(args: argparse.Namespace, config: Config) -> int:
    """Chat with the bot's real conversation core in the terminal (no Telegram, no token)."""
    asyncio.run(console(config))
    return 0


def run_command(args: argparse.Namespace, config: Config) -> int:
    """The main job in one process: the engine on loopback, and the bot (or, without a token,
    the console) talking to it over HTTP like any other client."""
    from engine.service.lifecycle import running_service  # the service itself never imports torch

    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"{TOKEN_ENV} is not set: starting the console instead of the Telegram bot.")

    async def engine_and_bot() -> None:
        async with running_service(config, LOOPBACK, config.engine.port) as url:
            local = dataclasses.replace(config, bot=dataclasses.replace(config.bot, engine_url=url))
            await (telegram_bot(local, token) if token else console(local))

    asyncio.run(engine_and_bot())
    return 0


async def telegram_bot(config: Config, token: str) -> None:
    """The Telegram bot until SIGINT/SIGTERM."""
    from bot.app import build_application, serve_forever

    await serve_forever(build_application(config, token, os.environ.get(ENGINE_TOKEN_ENV)))


async def console(config: Config) -> None:
    """The terminal chat until end of input."""
    from bot.app import engine_url
    from bot.console import run_console
    from engine.service.client import EngineClient

    token = os.environ.get(ENGINE_TOKEN_ENV)
    async with EngineClient(engine_url(config), token=token) as engine:
        await run_console(config, engine)
