"""A bot-only host has no torch: importing the bot must not pull it in."""

import subprocess
import sys


def test_the_bot_starts_without_torch():
    code = (
        "import sys, bot.app, bot.console, bot.cli, bot.handlers.poster, bot.handlers.admin; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
