"""`posterbot` subcommands owned by the bot: bot, console (`posterbot run` lives in posterbot/).

telegram is imported inside the commands, so `posterbot --help` works on any host.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from posterbot.config import Config

log = logging.getLogger(__name__)

TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
ENGINE_TOKEN_ENV = "POSTERBOT_ENGINE_TOKEN"


def register(commands: argparse._SubParsersAction) -> None:
    bot = commands.add_parser("bot", help="run the Telegram bot", description=bot_command.__doc__)
    bot.set_defaults(handler=bot_command)
    console = commands.add_parser(
        "console", help="chat with the bot in the terminal", description=console_command.__doc__
    )
    console.set_defaults(handler=console_command)


def bot_command(args: argparse.Namespace, config: Config) -> int:
    """Run the Telegram bot against the engine at [bot] engine_url (token: TELEGRAM_BOT_TOKEN)."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"posterbot bot: set {TOKEN_ENV} (from @BotFather)", file=sys.stderr)
        return 2
    asyncio.run(telegram_bot(config, token))
    return 0


def console_command(args: argparse.Namespace, config: Config) -> int:
    """The same conversation as the Telegram bot, in the terminal (no Telegram, no token)."""
    asyncio.run(console(config))
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
