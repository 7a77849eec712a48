"""`posterbot console`: the bot's real conversation core in a terminal, no Telegram needed.

Text is printed without HTML, pictures are saved to a folder and their paths printed, and the
buttons of the last keyboard are offered as numbered choices (type the number to press one).
Piped input (a script of lines) waits for the jobs before each line, so a "1" pressing a button
of the candidates reaches them after they arrived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import itertools
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bot.conversation import Conversation
from bot.i18n import t
from bot.replies import Button, Incoming, Picture, Place, Press, Reply, User
from bot.store import Store
from engine.service.client import EngineClient
from posterbot.config import Config

CONSOLE_USER_ID = 1  # the person at the terminal; an owner of this console session
_TAG = re.compile(r"<[^>]+>")


def plain(text: str) -> str:
    return html.unescape(_TAG.sub("", text))


class ConsoleOutbox:
    """Prints replies; saves pictures into `folder`."""

    def __init__(self, folder: Path, language: str, write: Callable[[str], None] = print) -> None:
        self.folder = folder
        self.language = language
        self.write = write
        self.buttons: list[Button] = []
        self.buttons_message = 0
        self.session = time.strftime("%Y%m%d-%H%M%S")  # file names of earlier sessions stay
        self._next_id = 0
        self._last_lines: dict[int, str] = {}

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _offer(self, message_id: int, reply: Reply) -> None:
        buttons = [button for row in reply.keyboard for button in row]
        if buttons:
            self.buttons, self.buttons_message = buttons, message_id
            choices = "  ".join(f"[{i}] {b.label}" for i, b in enumerate(buttons, 1))
            self.write(f"{t(self.language, 'console_buttons')} {choices}")

    async def send(self, place: Place, reply: Reply) -> int:
        message_id = self._id()
        self.write(plain(reply.text))
        self._last_lines[message_id] = reply.text.rsplit("\n", 1)[-1]
        self._offer(message_id, reply)
        return message_id

    async def edit(self, place: Place, message_id: int, reply: Reply) -> None:
        # Progress edits change the last line; print only that, not the whole message again.
        last = reply.text.rsplit("\n", 1)[-1]
        if reply.keyboard or last != self._last_lines.get(message_id):
            self.write(plain(last if not reply.keyboard else reply.text))
        self._last_lines[message_id] = last
        self._offer(message_id, reply)

    async def send_album(self, place: Place, pictures: list[Picture]) -> list[int]:
        return [await self.send_photo(place, picture) for picture in pictures]

    async def send_photo(self, place: Place, picture: Picture) -> int:
        message_id = self._id()
        self.folder.mkdir(parents=True, exist_ok=True)
        # The HD poster keeps its candidate's seed: the message id keeps both files.
        path = self.folder / f"{self.session}-{message_id:03d}-{picture.filename}"
        path.write_bytes(picture.png)
        self.write(f"{plain(picture.caption)}\n  {t(self.language, 'console_saved', path=path)}")
        return message_id

    send_document = send_photo  # the terminal has no photo/file difference: both are PNG files


async def run_command(conversation: Conversation, message: Incoming, line: str) -> None:
    """A /command typed in the console, dispatched like Telegram's CommandHandlers."""
    name, _, rest = line[1:].partition(" ")
    args = rest.split()
    with_args = {
        "lang": conversation.lang,
        "template": conversation.template,
        "seed": conversation.seed,
        "allow": conversation.allow,
        "deny": conversation.deny,
        "admins": conversation.admins,
    }
    without_args = {
        "start": conversation.help,
        "help": conversation.help,
        "settings": conversation.show_settings,
        "history": conversation.history,
        "queue": conversation.queue,
        "cancel": conversation.cancel,
        "info": conversation.info,
    }
    if name == "poster":
        await conversation.poster(message, rest)
    elif name in with_args:
        await with_args[name](message, args)
    elif name in without_args:
        await without_args[name](message)
    else:
        await conversation.help(message)


async def run_console(config: Config, engine: EngineClient, lines=None) -> None:
    """Chat in the terminal until end of input; `lines` (an iterator) replaces stdin in tests."""
    owners = [*config.access.owners, CONSOLE_USER_ID]
    config = dataclasses.replace(config, access=dataclasses.replace(config.access, owners=owners))
    folder = Path(config.bot.console_output_dir or config.data_dir / "console")
    user, place = User(CONSOLE_USER_ID, None, "console"), Place(CONSOLE_USER_ID)
    store = Store(config.data_dir / "bot.db")
    outbox = ConsoleOutbox(folder, "zh")
    # Console message ids restart at 1 every session: a fresh origin keeps job keys apart.
    origin = f"console-{uuid.uuid4().hex[:12]}"
    conversation = Conversation(config, store, engine, outbox, origin=origin)
    outbox.language = conversation.language(user)
    print(t(outbox.language, "console_welcome"))
    conversation.jobs.resume()
    conversation.training.resume()
    events = itertools.count(1)  # message and press ids, unique like Telegram's
    # next(lines, None): a StopIteration cannot cross to_thread's future (it would hang).
    read = (lambda: next(lines, None)) if lines is not None else (lambda: input("> "))
    scripted = lines is not None or not sys.stdin.isatty()
    while True:
        if scripted:
            await conversation.jobs.wait_idle()
        try:
            line = await asyncio.to_thread(read)
        except (EOFError, KeyboardInterrupt):
            break
        if line is None:
            break
        line = line.strip()
        outbox.language = conversation.language(user)
        message = Incoming(user, place, line, message_id=next(events))
        if line.isdigit() and 1 <= int(line) <= len(outbox.buttons):
            data = outbox.buttons[int(line) - 1].data
            press = Press(user, place, data, outbox.buttons_message, query_id=str(next(events)))
            notice = await conversation.press(press)
            if notice:
                print(notice)
        elif line.startswith("/"):
            await run_command(conversation, message, line)
        elif line:
            await conversation.text(message)
    await conversation.jobs.wait_idle()
    sys.stdout.flush()
