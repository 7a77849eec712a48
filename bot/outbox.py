"""The Outbox over the Telegram Bot API: HTML text, inline keyboards, albums, files, topics.

Flood limits are handled below this class by the bot's rate limiter (`bot.ratelimit`: it waits
out `retry_after` and retries, answers before results before progress); this class maps replies
onto Bot API calls and limits, and tells the limiter which edits are only progress.
"""

from __future__ import annotations

import contextlib

from telegram import (
    Bot,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    InputMediaPhoto,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest

from bot.i18n import MAX_MESSAGE_CHARS, shorten, split_text
from bot.ratelimit import Lane
from bot.replies import Keyboard, Picture, Place, Reply

MAX_ALBUM_SIZE = 10  # Telegram's media group limit (2 to 10 items)


def markup(keyboard: Keyboard) -> InlineKeyboardMarkup | None:
    if not keyboard:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.data) for b in row] for row in keyboard]
    )


class TelegramOutbox:
    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send(self, place: Place, reply: Reply) -> int:
        """Long texts go as several messages; the keyboard sits under the last one."""
        pieces = split_text(reply.text)
        message_id = 0
        for number, piece in enumerate(pieces, 1):
            last = number == len(pieces)
            reply_markup = markup(reply.keyboard) if last else None
            if last and reply.ask_reply:
                reply_markup = ForceReply(selective=True)
            message = await self.bot.send_message(
                place.chat_id,
                piece,
                parse_mode=ParseMode.HTML,
                message_thread_id=place.thread_id,
                reply_markup=reply_markup,
            )
            message_id = message.message_id
        return message_id

    async def edit(self, place: Place, message_id: int, reply: Reply) -> None:
        # Telegram refuses an edit that changes nothing; that is not a failure for us.
        with contextlib.suppress(BadRequest):
            await self.bot.edit_message_text(
                shorten(reply.text, MAX_MESSAGE_CHARS),
                chat_id=place.chat_id,
                message_id=message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=markup(reply.keyboard),
                rate_limit_args=Lane.PROGRESS if reply.progress else None,
            )

    async def send_album(self, place: Place, pictures: list[Picture]) -> list[int]:
        if len(pictures) == 1 or not all(p.fits_photo for p in pictures):
            return [await self.send_photo(place, picture) for picture in pictures]
        message_ids = []
        for start in range(0, len(pictures), MAX_ALBUM_SIZE):
            group = pictures[start : start + MAX_ALBUM_SIZE]
            if len(group) == 1:  # an album holds 2 to 10: the one left over goes alone
                message_ids.append(await self.send_photo(place, group[0]))
                continue
            media = [
                InputMediaPhoto(
                    p.png,
                    caption=shorten(p.caption),
                    parse_mode=ParseMode.HTML,
                    filename=p.filename,
                )
                for p in group
            ]
            messages = await self.bot.send_media_group(
                place.chat_id, media, message_thread_id=place.thread_id
            )
            message_ids += [message.message_id for message in messages]
        return message_ids

    async def send_photo(self, place: Place, picture: Picture) -> int:
        if not picture.fits_photo:
            return await self.send_document(place, picture)
        message = await self.bot.send_photo(
            place.chat_id,
            InputFile(picture.png, filename=picture.filename),
            caption=shorten(picture.caption),
            parse_mode=ParseMode.HTML,
            message_thread_id=place.thread_id,
            reply_markup=markup(picture.keyboard),
        )
        return message.message_id

    async def send_document(self, place: Place, picture: Picture) -> int:
        # disable_content_type_detection keeps Telegram from turning the PNG into a photo.
        message = await self.bot.send_document(
            place.chat_id,
            InputFile(picture.png, filename=picture.filename),
            caption=shorten(picture.caption),
            parse_mode=ParseMode.HTML,
            message_thread_id=place.thread_id,
            reply_markup=markup(picture.keyboard),
            disable_content_type_detection=True,
        )
        return message.message_id
