"""Poster requests, buttons under the results, and the queue/history/info commands."""

from __future__ import annotations

from telegram import Update
from telegram.ext import ContextTypes

from bot.handlers.common import MAX_DOWNLOAD_BYTES, command_text, core, incoming, place_of
from bot.replies import Press, User


async def poster_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/poster <request>: draw a poster (works in groups with privacy mode on)."""
    await core(context).poster(incoming(update), command_text(update))


async def text_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Text addressed to the bot: a request, or the changes for "edit prompt"."""
    mention = f"@{context.bot.username}"
    text = (update.effective_message.text or "").replace(mention, " ").strip()
    await core(context).text(incoming(update, text=text))


async def button_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button under one of our messages (permissions are checked in the core)."""
    query = update.callback_query
    user = update.effective_user
    press = Press(
        user=User(user.id, user.language_code, user.full_name),
        place=place_of(query.message),
        data=query.data or "",
        message_id=query.message.message_id,
        query_id=query.id,
    )
    notice = await core(context).press(press)
    await query.answer(notice)


async def info_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/info, or a PNG sent as a file: show its generation parameters."""
    document = update.effective_message.document
    data = None
    if document and (document.file_size or 0) <= MAX_DOWNLOAD_BYTES:
        data = bytes(await (await document.get_file()).download_as_bytearray())
    await core(context).info(incoming(update, document=data))


async def seed_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/seed [N|off]: show, lock or unlock the seed."""
    await core(context).seed(incoming(update), context.args or [])


async def history_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/history: the last jobs, re-runnable."""
    await core(context).history(incoming(update))


async def queue_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/queue: this user's jobs in the engine."""
    await core(context).queue(incoming(update))


async def cancel_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/cancel: cancel this user's jobs."""
    await core(context).cancel(incoming(update))
