"""What the conversation core says and where: plain data, so any chat adapter can render it.

The core never touches Telegram. It writes `Reply`s and `Picture`s to an `Outbox`; the Telegram
adapter turns them into Bot API calls, the console into printed text and saved files.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

MAX_PHOTO_BYTES = 10 * 2**20  # Telegram's sendPhoto limit; larger images go as files only
MAX_PHOTO_SIDES = 10_000  # Telegram's sendPhoto limit on width + height (print sizes pass it)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Button:
    label: str
    data: str  # opaque to adapters; at most 64 bytes (Telegram's callback_data limit)


Keyboard = list[list[Button]]
ROW_WIDTH = 5  # buttons per row; Telegram wraps awkwardly beyond this on phones


def rows(buttons: list[Button], width: int = ROW_WIDTH) -> Keyboard:
    """`buttons` in rows of `width`."""
    return [buttons[i : i + width] for i in range(0, len(buttons), width)]


@dataclass(frozen=True)
class Reply:
    text: str  # HTML (Telegram's subset); user-supplied parts are already escaped
    keyboard: Keyboard = field(default_factory=list)
    ask_reply: bool = False  # the user should answer by replying to this message
    progress: bool = False  # a progress update: adapters may send it after everything else


@dataclass(frozen=True)
class Picture:
    png: bytes  # PNG with its infotext; adapters send it as a photo or as a file (a file may be
    # another format, e.g. a poster's editable SVG)
    caption: str  # HTML
    filename: str
    keyboard: Keyboard = field(default_factory=list)  # under the photo or file (not in albums)

    @property
    def fits_photo(self) -> bool:
        """Whether chat apps take it as a photo (Telegram's limits); else it goes as a file."""
        if len(self.png) > MAX_PHOTO_BYTES or not self.png.startswith(PNG_SIGNATURE):
            return False
        width, height = struct.unpack(">II", self.png[16:24])  # the IHDR chunk comes first
        return width + height <= MAX_PHOTO_SIDES


@dataclass(frozen=True)
class Place:
    """Where a conversation happens: a chat, and the forum topic inside it if any."""

    chat_id: int
    thread_id: int | None = None
    is_group: bool = False


@dataclass(frozen=True)
class User:
    id: int
    language: str | None = None  # the client's language code (zh-hans, en ...)
    name: str = ""


def engine_user(user_id: int) -> str:
    """The engine's fair queue is per user; ids are namespaced by the chat platform."""
    return f"tg:{user_id}"


@dataclass(frozen=True)
class Incoming:
    """A message the bot must answer: text (a request or a command's arguments), maybe a file."""

    user: User
    place: Place
    text: str = ""
    message_id: int = 0
    reply_to_message_id: int | None = None  # the bot's message this one replies to
    document: bytes | None = None  # an attached file's bytes (a PNG for /info, a dataset zip ...)
    filename: str = ""  # the attached file's name as the sender's client gave it
    as_photo: bool = False  # the attachment came as a photo: the chat app recompressed it

    @property
    def key(self) -> str:
        """Unique per message: a message seen twice (a restart) submits its job once."""
        return f"{self.place.chat_id}:m{self.message_id}"


@dataclass(frozen=True)
class Press:
    """A button pressed under one of the bot's messages."""

    user: User
    place: Place
    data: str
    message_id: int
    query_id: str = ""  # unique per press

    @property
    def key(self) -> str:
        return f"{self.place.chat_id}:q{self.query_id}"


class Outbox(Protocol):
    """How the core talks back; each method returns the id(s) of what it sent."""

    async def send(self, place: Place, reply: Reply) -> int: ...

    async def edit(self, place: Place, message_id: int, reply: Reply) -> None: ...

    async def send_album(self, place: Place, pictures: list[Picture]) -> list[int]: ...

    async def send_photo(self, place: Place, picture: Picture) -> int: ...

    async def send_document(self, place: Place, picture: Picture) -> int: ...
