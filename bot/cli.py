"""`posterbot` subcommands owned by the bot: bot, console, run.

telegram is imported inside the commands, so `posterbot --help` works on any host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator

from posterbot.config import Config

log = logging.getLogger(__name__)

TOKEN_ENV = "TELEGRAM_BOT_TOKEN"
ENGINE_TOKEN_ENV = "POSTERBOT_ENGINE_TOKEN"
ENGINE_START_TIMEOUT_S = 300  # first start loads the model; a real checkpoint takes a while


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
    from bot.app import build_application, serve_forever

    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"posterbot bot: set {TOKEN_ENV} (from @BotFather)", file=sys.stderr)
        return 2
    application = build_application(config, token, os.environ.get(ENGINE_TOKEN_ENV))
    asyncio.run(serve_forever(application))
    return 0


def console_command(args: argparse.Namespace, config: Config) -> int:
    """Chat with the bot's real conversation core in the terminal (no Telegram, no token)."""
    from bot.app import engine_url
    from bot.console import run_console
    from engine.client import EngineClient

    async def main() -> None:
        async with EngineClient(
            engine_url(config), token=os.environ.get(ENGINE_TOKEN_ENV)
        ) as engine:
            await run_console(config, engine)

    asyncio.run(main())
    return 0


def run_command(args: argparse.Namespace, config: Config) -> int:
    """The main job: the engine on loopback, then the bot (or, without a token, the console)."""
    with local_engine(args, config):
        if os.environ.get(TOKEN_ENV):
            return bot_command(args, config)
        print(f"{TOKEN_ENV} is not set: starting the console instead of the Telegram bot.")
        return console_command(args, config)


@contextlib.contextmanager
def local_engine(args: argparse.Namespace, config: Config) -> Iterator[None]:
    """`posterbot engine` as a child process on loopback, stopped when the block exits."""
    command = [sys.executable, "-m", "posterbot"]
    if args.config:
        command += ["--config", args.config]
    child = subprocess.Popen([*command, "engine", "--host", "127.0.0.1"])
    try:
        wait_for_engine(f"http://127.0.0.1:{config.engine.port}", child)
        yield
    finally:
        child.terminate()
        child.wait(timeout=60)


def wait_for_engine(url: str, child: subprocess.Popen) -> None:
    from engine.client import EngineClient, EngineError

    async def healthy() -> bool:
        async with EngineClient(url, token=os.environ.get(ENGINE_TOKEN_ENV), retries=0) as engine:
            try:
                return bool((await engine.health()).get("ok"))
            except EngineError:
                return False

    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    while not asyncio.run(healthy()):
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the engine did not start at {url} (see its log above)")
        time.sleep(0.5)
