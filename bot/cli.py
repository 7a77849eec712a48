"""`posterbot bot`, and the chats `posterbot run` and `posterbot console` (posterbot/run.py) start.

telegram is imported inside the commands, so `posterbot --help` works on any host.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from posterbot.config import Config, ConfigError, engine_url
from posterbot.logs import setup_logging

log = logging.getLogger(__name__)

TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
ENGINE_TOKEN_ENV = "POSTERBOT_ENGINE_TOKEN"


def register(commands: argparse._SubParsersAction) -> None:
    bot = commands.add_parser("bot", help="run the Telegram bot", description=bot_command.__doc__)
    bot.set_defaults(handler=bot_command)


def bot_command(args: argparse.Namespace, config: Config) -> int:
    """Run the Telegram bot against the engine at [bot] engine_url (token: TELEGRAM_BOT_TOKEN)."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"posterbot bot: set {TOKEN_ENV} (from @BotFather)", file=sys.stderr)
        return 2
    setup_logging(config.data_dir, terminal=True, verbose=args.verbose)
    asyncio.run(telegram_bot(config, token))
    return 0


async def telegram_bot(config: Config, token: str) -> None:
    """The Telegram bot until SIGINT/SIGTERM. A token Telegram refuses, or a Bot API server it
    cannot reach, stops it with one line (the library's own text carries the token)."""
    from telegram.error import InvalidToken, NetworkError

    from bot.app import build_application, serve_forever

    try:
        await serve_forever(build_application(config, token, os.environ.get(ENGINE_TOKEN_ENV)))
    except InvalidToken:
        raise ConfigError(
            TOKEN_ENV, "Telegram refused this token: copy it again from @BotFather"
        ) from None
    except NetworkError:
        log.warning("the Bot API at %s cannot be reached", config.telegram.base_url, exc_info=True)
        raise ConfigError(
            "telegram.base_url", f"cannot reach {config.telegram.base_url} (network, proxy?)"
        ) from None


async def console(config: Config, no_token: bool = False) -> None:
    """The terminal chat until end of input (`no_token`: it stands in for the Telegram bot)."""
    from bot.console import run_console
    from engine.service.client import EngineClient

    token = os.environ.get(ENGINE_TOKEN_ENV)
    async with EngineClient(engine_url(config), token=token) as engine:
        await run_console(config, engine, no_token=no_token)
