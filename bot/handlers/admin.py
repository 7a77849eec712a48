"""Access management for owners and admins (checked in the core)."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.handlers.common import core, incoming


async def allow_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/allow ID: give a user or group access."""
    await core(context).allow(incoming(update), context.args or [])


async def deny_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/deny ID: take access away."""
    await core(context).deny(incoming(update), context.args or [])


async def admins_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/admins [add|remove ID]: list or change admins."""
    await core(context).admins(incoming(update), context.args or [])
