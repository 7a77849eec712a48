"""Per-user settings and parameter templates."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.handlers.common import core, incoming


async def settings_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/settings: the settings keyboard."""
    await core(context).show_settings(incoming(update))


async def template_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/template save|use|list|delete NAME."""
    await core(context).template(incoming(update), context.args or [])


async def help_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/help: what the bot does and its commands."""
    await core(context).help(incoming(update))
