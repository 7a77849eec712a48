"""`posterbot console`: the same conversation as the Telegram bot, in a terminal.

Lines go to the same router table as Telegram's updates: `/command args`, plain text, a number
to press one of the last keyboard's buttons, and `/send PATH` for what a chat user would attach
(a photo or sketch to draw from, `/send PATH request` with its request; a dataset zip, a LoRA
.safetensors, a PNG to read). `/info PATH` reads a PNG. Text is printed without HTML; pictures
and files are saved to a folder and their paths printed. Piped input (a script of lines) waits
for the jobs before each line, so a "1" pressing a button of the candidates reaches them after
they arrived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from bot.chat import ROUTER, start_chat
from bot.core import Core
from bot.i18n import plain, t
from bot.replies import Button, Incoming, Keyboard, Picture, Place, Press, Reply, User
from bot.store import Store
from engine.service.client import EngineClient
from posterbot.config import Config
from posterbot.logs import log_path

log = logging.getLogger(__name__)

CONSOLE_USER_ID = 1  # the person at the terminal; an owner of this console session
FILE_COMMANDS = ("send", "info")  # their argument is a path on this machine


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

    def _offer(self, message_id: int, keyboard: Keyboard) -> None:
        buttons = [button for row in keyboard for button in row]
        if buttons:
            self.buttons, self.buttons_message = buttons, message_id
            choices = "  ".join(f"[{i}] {b.label}" for i, b in enumerate(buttons, 1))
            self.write(f"{t(self.language, 'console_buttons')} {choices}")

    async def send(self, place: Place, reply: Reply) -> int:
        message_id = self._id()
        self.write(plain(reply.text))
        self._last_lines[message_id] = reply.text.rsplit("\n", 1)[-1]
        self._offer(message_id, reply.keyboard)
        return message_id

    async def edit(self, place: Place, message_id: int, reply: Reply) -> None:
        # Progress edits change the last line; print only that, not the whole message again.
        last = reply.text.rsplit("\n", 1)[-1]
        if reply.keyboard or last != self._last_lines.get(message_id):
            self.write(plain(last if not reply.keyboard else reply.text))
        self._last_lines[message_id] = last
        self._offer(message_id, reply.keyboard)

    async def send_album(self, place: Place, pictures: list[Picture]) -> list[int]:
        return [await self.send_photo(place, picture) for picture in pictures]

    async def send_photo(self, place: Place, picture: Picture) -> int:
        message_id = self._id()
        self.folder.mkdir(parents=True, exist_ok=True)
        # The HD poster keeps its candidate's seed: the message id keeps both files.
        path = self.folder / f"{self.session}-{message_id:03d}-{picture.filename}"
        path.write_bytes(picture.png)
        self.write(f"{plain(picture.caption)}\n  {t(self.language, 'console_saved', path=path)}")
        self._offer(message_id, picture.keyboard)
        return message_id

    send_document = send_photo  # the terminal has no photo/file difference: both are saved


async def command(core: Core, message: Incoming, line: str) -> None:
    """A /command typed in the console, answered from the router's table like Telegram's;
    `/send PATH` and `/info PATH` attach the file at PATH."""
    name, _, rest = line[1:].partition(" ")
    rest = rest.strip()
    if name in FILE_COMMANDS and rest:
        path, caption = attached_path(rest)
        if not path.is_file():
            await core.say(message.place, core.language(message.user), "console_no_file", path=path)
            return
        attached = {"document": path.read_bytes(), "filename": path.name}
        message = dataclasses.replace(message, text=caption, **attached)
    else:
        message = dataclasses.replace(message, text=rest)
    if name == "send":
        await send_file(core, message)
    else:
        await ROUTER.command(core, message, name)


def attached_path(rest: str) -> tuple[Path, str]:
    """`PATH` (spaces allowed) or `PATH caption…` (a picture with its request, as a photo's
    caption in a chat)."""
    whole = Path(rest).expanduser()
    if whole.is_file() or " " not in rest:
        return whole, ""
    first, _, caption = rest.partition(" ")
    return Path(first).expanduser(), caption.strip()


async def send_file(core: Core, message: Incoming) -> None:
    """/send PATH: the file goes where a chat attachment would (dataset, LoRA, PNG info)."""
    language = core.language(message.user)
    handler = ROUTER.file_handler(core, message.user.id, message.filename, False)
    if message.document is None:
        await core.say(message.place, language, "console_send_usage")
    elif handler is None:
        await core.say(message.place, language, "console_send_unknown")
    else:
        await handler(core, message)


async def answer(core: Core, outbox: ConsoleOutbox, typed: Incoming, events: Iterator[int]) -> None:
    """One typed line: a number presses a button of the last keyboard, else a command or text."""
    line, user, place = typed.text, typed.user, typed.place
    message = dataclasses.replace(typed, message_id=next(events))
    if line.isdigit() and 1 <= int(line) <= len(outbox.buttons):
        data = outbox.buttons[int(line) - 1].data
        press = Press(user, place, data, outbox.buttons_message, query_id=str(next(events)))
        if notice := await ROUTER.press(core, press):
            print(notice)
    elif line.startswith("/"):
        await command(core, message, line)
    elif line:
        await ROUTER.text(core, message)


async def run_console(
    config: Config, engine: EngineClient, lines=None, no_token: bool = False
) -> None:
    """Chat in the terminal until end of input; `lines` (an iterator) replaces stdin in tests;
    `no_token`: the console stands in for the Telegram bot (`posterbot run` without a token)."""
    owners = [*config.access.owners, CONSOLE_USER_ID]
    config = dataclasses.replace(config, access=dataclasses.replace(config.access, owners=owners))
    folder = Path(config.bot.console_output_dir or config.data_dir / "console")
    user, place = User(CONSOLE_USER_ID, None, "console"), Place(CONSOLE_USER_ID)
    store = Store(config.data_dir / "bot.db")
    outbox = ConsoleOutbox(folder, "zh")
    # Console message ids restart at 1 every session: a fresh origin keeps job keys apart.
    origin = f"console-{uuid.uuid4().hex[:12]}"
    core = start_chat(config, store, engine, outbox, origin=origin)
    outbox.language = core.language(user)
    if no_token:
        print(t(outbox.language, "console_no_token"))
    print(t(outbox.language, "console_welcome", log=log_path(config.data_dir)))
    core.follower.resume()
    events = itertools.count(1)  # message and press ids, unique like Telegram's
    # next(lines, None): a StopIteration cannot cross to_thread's future (it would hang).
    read = (lambda: next(lines, None)) if lines is not None else (lambda: input("> "))
    scripted = lines is not None or not sys.stdin.isatty()
    while True:
        if scripted:
            await core.follower.wait_idle()
        try:
            line = await asyncio.to_thread(read)
        except (EOFError, KeyboardInterrupt):
            break
        if line is None:
            break
        outbox.language = core.language(user)
        try:
            await answer(core, outbox, Incoming(user, place, line.strip()), events)
        except Exception as exc:  # as Telegram's error handler: logged, the user told
            log.error("handling a console line failed", exc_info=exc)
            await core.say(place, outbox.language, "error", what=type(exc).__name__)
    await core.follower.wait_idle()
    sys.stdout.flush()
