"""Admins' LoRA commands and uploads (datasets, training, versions, grids); checked in the core."""

from __future__ import annotations

import dataclasses

from telegram import Update
from telegram.ext import (
    Application,
    ApplicationHandlerStop,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot.handlers.common import MAX_DOWNLOAD_BYTES, core, incoming

UPLOADS_GROUP = -1  # before the /info PNG handler: a dataset session's PNGs are ours


async def dataset_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/dataset new <ip> | done [name] | cancel."""
    await core(context).training.dataset(incoming(update), context.args or [])


async def train_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/train <ip> [key=value ...] | status | cancel."""
    await core(context).training.train(incoming(update), context.args or [])


async def versions_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/versions [ip]: LoRA versions."""
    await core(context).training.versions(incoming(update), context.args or [])


async def promote_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/promote <ip> vN: posters use that version."""
    await core(context).training.promote(incoming(update), context.args or [])


async def rollback_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/rollback <ip>: back to the version before."""
    await core(context).training.rollback(incoming(update), context.args or [])


async def export_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/export <ip-vN>: the version's .safetensors file."""
    await core(context).training.export(incoming(update), context.args or [])


async def xyz_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/xyz <ip> axis=v1,v2 ...: a labelled comparison grid."""
    await core(context).training.xyz(incoming(update), context.args or [])


async def upload(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A file or photo for the training core (zip, LoRA, session file); others pass on."""
    message = update.effective_message
    attachment = message.document or (message.photo[-1] if message.photo else None)
    as_photo = message.document is None
    filename = f"photo-{attachment.file_unique_id}.jpg" if as_photo else attachment.file_name or ""
    training = core(context).training
    if not training.wants(update.effective_user.id, filename, as_photo):
        return
    data = None  # None: too large for the Bot API to hand over; the core says so
    if (attachment.file_size or 0) <= MAX_DOWNLOAD_BYTES:
        data = bytes(await (await attachment.get_file()).download_as_bytearray())
    arrived = incoming(update, document=data)
    await training.upload(dataclasses.replace(arrived, filename=filename, as_photo=as_photo))
    raise ApplicationHandlerStop


def add_handlers(application: Application) -> None:
    """The training commands, and uploads in private chats ahead of the /info handler."""
    commands = {
        "dataset": dataset_command,
        "train": train_command,
        "versions": versions_command,
        "promote": promote_command,
        "rollback": rollback_command,
        "export": export_command,
        "xyz": xyz_command,
    }
    for name, callback in commands.items():
        application.add_handler(CommandHandler(name, callback))
    files = (filters.Document.ALL | filters.PHOTO) & filters.ChatType.PRIVATE
    application.add_handler(MessageHandler(files, upload), group=UPLOADS_GROUP)
