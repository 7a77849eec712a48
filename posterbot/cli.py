"""The `posterbot` command: wiring only. Each package registers its own subcommands.

Subcommand modules import their heavy dependencies (torch, telegram) inside the command, so
`posterbot prompt` works on a host without torch and `posterbot --help` is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from posterbot.config import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    from bot import cli as bot_cli
    from engine import cli as engine_cli
    from posterbot import doctor, run
    from prompts import cli as prompts_cli

    parser = argparse.ArgumentParser(prog="posterbot", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="config file (default ./config.toml or $POSTERBOT_CONFIG)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (engine_cli, prompts_cli, bot_cli, run, doctor):
        module.register(commands)
    return parser


# What posterbot writes (bot.db with users' requests and roles, engine.db, pictures, datasets,
# LoRA files, logs) is readable by the service's own user only: files 0600, folders 0700.
PRIVATE_UMASK = 0o077


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(PRIVATE_UMASK)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        return int(args.handler(args, config) or 0)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"posterbot {args.command}: {exc}", file=sys.stderr)
        return 2
