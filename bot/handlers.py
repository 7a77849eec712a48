"""Telegram handlers: each turns an Update into the core's `Incoming`/`Press` and hands it to
the router, which calls the feature that answers it (bot/router.py)."""

from __future__ import annotations

import html
import logging
import traceback

from telegram import CallbackQuery, Document, Message, PhotoSize, Update
from telegram.constants import ChatType, ParseMode
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from bot.chat import ROUTER
from bot.core import Core
from bot.i18n import pick_language, shorten, t
from bot.replies import Incoming, Place, Press, User

log = logging.getLogger(__name__)

MAX_DOWNLOAD_BYTES = 20 * 2**20  # the Bot API's getFile limit (a self-hosted server lifts it)


def core(context: ContextTypes.DEFAULT_TYPE) -> Core:
    return context.application.bot_data["core"]


def place_of(message: Message) -> Place:
    """The chat, and the forum topic when the message is in one (answers go to that topic)."""
    thread_id = message.message_thread_id if message.is_topic_message else None
    return Place(message.chat.id, thread_id, message.chat.type != ChatType.PRIVATE)


def user_of(update: Update) -> User:
    user = update.effective_user
    return User(user.id, user.language_code, user.full_name)


def incoming(
    update: Update, text: str, document: bytes | None = None, **attached: str | bool
) -> Incoming:
    """The message as the core sees it; `attached`: the file's `filename`, `as_photo`."""
    message = update.effective_message
    replied = message.reply_to_message
    return Incoming(
        user=user_of(update),
        place=place_of(message),
        text=text,
        message_id=message.message_id,
        reply_to_message_id=replied.message_id if replied else None,
        document=document,
        **attached,
    )


def command_parts(update: Update) -> tuple[str, str]:
    """The command's name (without @botname) and what follows it, line breaks kept
    (`context.args` would lose them)."""
    message = update.effective_message
    command, _, rest = (message.text or message.caption or "").partition(" ")
    if "\n" in command:
        command, _, more = command.partition("\n")
        rest = f"{more} {rest}".strip()
    return command[1:].partition("@")[0].lower(), rest.strip()


async def command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /command: the router's table names the feature that answers it."""
    name, rest = command_parts(update)
    await ROUTER.command(core(context), incoming(update, rest), name)


async def text_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Text addressed to the bot: a request, or the changes for "edit prompt"."""
    mention = f"@{context.bot.username}"
    text = (update.effective_message.text or "").replace(mention, " ").strip()
    await ROUTER.text(core(context), incoming(update, text))


async def button_press(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button under one of our messages (permissions are checked by its feature). Every press
    is answered, whatever happens, or the user's client keeps spinning."""
    query, notice = update.callback_query, None
    try:
        if not isinstance(query.message, Message):  # too old: Telegram sends no content
            log.info("button under a message the bot can no longer read: %r", query.data)
            notice = t(core(context).language(user_of(update)), "button_stale")
            return
        press = Press(
            user=user_of(update),
            place=place_of(query.message),
            data=query.data or "",
            message_id=query.message.message_id,
            query_id=query.id,
        )
        notice = await ROUTER.press(core(context), press)
    finally:
        await answer_press(query, notice)


async def answer_press(query: CallbackQuery, notice: str | None) -> None:
    """Stop the client's spinner; a press answered too late (a bot that was down) is only
    logged: Telegram refuses it, and there is nothing left to tell the user."""
    try:
        await query.answer(notice)
    except BadRequest as exc:
        log.info("could not answer button press %s: %s", query.id, exc)


async def download(attachment: Document | PhotoSize) -> bytes | None:
    """The file's bytes; None when the Bot API would not hand it over (too large)."""
    if (attachment.file_size or 0) > MAX_DOWNLOAD_BYTES:
        return None
    return bytes(await (await attachment.get_file()).download_as_bytearray())


async def attachment_message(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A file or photo in a private chat, for the feature that takes it (if any)."""
    message = update.effective_message
    attachment = message.document or message.photo[-1]
    as_photo = message.document is None
    filename = f"photo-{attachment.file_unique_id}.jpg" if as_photo else attachment.file_name or ""
    handler = ROUTER.file_handler(core(context), update.effective_user.id, filename, as_photo)
    if handler is not None:
        data = await download(attachment)
        caption = message.caption or ""
        arrived = incoming(update, caption, data, filename=filename, as_photo=as_photo)
        await handler(core(context), arrived)


async def info_attachment(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A PNG captioned /info in a group: its parameters."""
    _, rest = command_parts(update)
    document = await download(update.effective_message.document)
    await ROUTER.command(core(context), incoming(update, rest, document), "info")


async def error_handler(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log the failure, tell the user what to do, and report it to the admin chat."""
    log.error("handling an update failed", exc_info=context.error)
    what = type(context.error).__name__
    if isinstance(update, Update) and update.effective_chat and update.effective_user:
        stored = core(context).store.user(update.effective_user.id)["language"]
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
