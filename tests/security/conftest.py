"""The attack suite runs against what users run: the real engine service (a child process on
the tiny model, or its HTTP app in-process), real bot Applications on a fake Bot API, and the
CLI. Its fixtures are the bot and engine suites' own; a test module that uses `client` defines
the `config` it serves (as tests/engine's modules do)."""

from __future__ import annotations

from tests.bot.conftest import (  # noqa: F401 (fixtures)
    bot,
    bot_config,
    engine_config_file,
    engine_url,
    telegram,
)
from tests.engine.conftest import client, live_service  # noqa: F401 (fixtures)
