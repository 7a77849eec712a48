"""`posterbot run` and `posterbot console`: the bot (or the terminal chat) with an engine to talk
to, over HTTP like any other client.

`run` always starts its engine on loopback. `console` uses the engine at [bot] engine_url when one
answers there, else starts one in-process like `run` (when that URL is this machine's), or says
in one line how to start it. When the terminal is the conversation, every log line goes to
`<data_dir>/logs/posterbot.log`, so the screen shows only the chat.

The wiring package may import every layer; it does so inside the commands, so `posterbot --help`
stays instant and torch loads only when the engine starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from posterbot.config import Config, engine_url
from posterbot.logs import setup_logging

LOOPBACK = "127.0.0.1"  # an engine started here for the chat stays off the network
PROBE_TIMEOUT_S = 3.0  # an engine on this machine answers /healthz at once when it runs


def register(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run", help="engine + bot (or console without a token)", description=run_command.__doc__
    )
    run.set_defaults(handler=run_command)
    console = commands.add_parser(
        "console", help="chat with the bot in the terminal", description=console_command.__doc__
    )
    console.set_defaults(handler=console_command)


def run_command(args: argparse.Namespace, config: Config) -> int:
    """The main job in one process: the engine on loopback, and the bot (or, without
    TELEGRAM_BOT_TOKEN, the terminal console) talking to it over HTTP like any other client."""
    from bot.cli import TOKEN_ENV, console, telegram_bot
    from engine.service.lifecycle import running_service

    token = os.environ.get(TOKEN_ENV)
    setup_logging(config.data_dir, terminal=bool(token), verbose=args.verbose)

    async def engine_and_bot() -> None:
        async with running_service(config, LOOPBACK, config.engine.port) as url:
            local = with_engine_url(config, url)
            await (telegram_bot(local, token) if token else console(local, no_token=True))

    asyncio.run(engine_and_bot())
    return 0


def console_command(args: argparse.Namespace, config: Config) -> int:
    """The same conversation as the Telegram bot, in the terminal (no Telegram, no token): with
    the engine at [bot] engine_url if one runs there, else with one started in this process."""
    from bot.cli import console

    setup_logging(config.data_dir, terminal=False, verbose=args.verbose)

    async def engine_and_console() -> None:
        async with engine_for_chat(config) as url:
            await console(with_engine_url(config, url))

    asyncio.run(engine_and_console())
    return 0


@contextlib.asynccontextmanager
async def engine_for_chat(config: Config) -> AsyncIterator[str]:
    """The URL of a running engine: the configured one if it answers, else one started here."""
    from engine.service.lifecycle import running_service

    url = engine_url(config)
    if await engine_answers(url):
        yield url
        return
    address = urlsplit(url)
    if address.hostname not in (LOOPBACK, "localhost") or address.port != config.engine.port:
        raise SystemExit(
            f"posterbot console: 出图服务 {url} 连不上。请先在那台机器上运行 posterbot engine，"
            "或者用 posterbot run（在本机同时启动出图服务和对话）。"
        )
    async with running_service(config, LOOPBACK, config.engine.port) as started:
        yield started


async def engine_answers(url: str) -> bool:
    """Whether an engine answers /healthz at `url` (healthy or not)."""
    from bot.cli import ENGINE_TOKEN_ENV
    from engine.service.client import EngineClient, EngineUnavailable

    token = os.environ.get(ENGINE_TOKEN_ENV)
    try:
        async with EngineClient(url, token=token, timeout_s=PROBE_TIMEOUT_S, retries=0) as probe:
            await probe.health()
    except EngineUnavailable:
        return False
    return True


def with_engine_url(config: Config, url: str) -> Config:
    return dataclasses.replace(config, bot=dataclasses.replace(config.bot, engine_url=url))
