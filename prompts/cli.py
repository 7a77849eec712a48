"""`posterbot` subcommands owned by the prompts package."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction) -> None:
    """Add the prompt builder's subcommands (none yet)."""
