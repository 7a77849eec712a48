"""Shared by all handlers: Update -> Incoming, the core, and the one error handler."""

from __future__ import annotations

import html
import logging
import traceback

from telegram import Message, Update
from telegram.constants import ChatType, ParseMode
from telegram.ext import ContextTypes

from bot.conversation import Conversation
from bot.i18n import pick_language, shorten, t
from bot.replies import Incoming, Place, User

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 20 * 2**20  # the Bot API's getFile limit (a self-hosted server lifts it)


def core(context: ContextTypes.DEFAULT_TYPE) -> Conversation:
    return context.application.bot_data["conversation"]


def place_of(message: Message) -> Place:
    """The chat, and the forum topic when the message is in one (answers go to that topic)."""
    thread_id = message.message_thread_id if message.is_topic_message else None
    return Place(message.chat.id, thread_id, message.chat.type != ChatType.PRIVATE)


def incoming(update: Update, text: str | None = None, document: bytes | None = None) -> Incoming:
    message = update.effective_message
    user = update.effective_user
    replied = message.reply_to_message
    return Incoming(
        user=User(user.id, user.language_code, user.full_name),
        place=place_of(message),
        text=(message.text or message.caption or "") if text is None else text,
        message_id=message.message_id,
        reply_to_message_id=replied.message_id if replied else None,
        document=document,
    )


def command_text(update: Update) -> str:
    """What follows the command, line breaks kept (`context.args` would lose them)."""
    text = update.effective_message.text or update.effective_message.caption or ""
    parts = text.split(maxsplit=1)
    return parts[1] if len(parts) > 1 else ""


async def start_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greet with the help text."""
    await core(context).help(incoming(update))


async def lang_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Switch the language the bot answers in."""
    await core(context).lang(incoming(update), context.args or [])


async def error_handler(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log the failure, tell the user what to do, and report it to the admin chat."""
    log.error("handling an update failed", exc_info=context.error)
    what = type(context.error).__name__
    if isinstance(update, Update) and update.effective_chat and update.effective_user:
        conversation = core(context)
        stored = conversation.store.user(update.effective_user.id)["language"]
        language = pick_language(stored, update.effective_user.language_code)
        place = place_of(update.effective_message) if update.effective_message else None
        await context.bot.send_message(
            update.effective_chat.id,
            t(language, "error", what=what),
            parse_mode=ParseMode.HTML,
            message_thread_id=place.thread_id if place else None,
        )
    admin_chat_id = context.application.bot_data["config"].telegram.admin_chat_id
    if admin_chat_id:
        trace = "".join(traceback.format_exception(context.error))
        report = f"<b>posterbot error</b>: {html.escape(what)}\n<pre>{html.escape(trace)}</pre>"
        await context.bot.send_message(
            admin_chat_id, shorten(report, 4000), parse_mode=ParseMode.HTML
        )
