"""The one table from what a chat user does to the feature code that answers it.

Each feature module in bot/features/ lists what it answers, and nothing else routes:

- `COMMANDS = {"versions": versions}`: `/versions ...` → `await versions(core, message, args)`
- `BUTTONS = {"pick": pick}`: callback data `pick:<args>` → `await pick(core, press, args)`, which
  may return a short notice for the presser
- `FILES = [(accepts, handler)]`: an attachment goes to the first `accepts(core, user_id,
  filename, as_photo)`, decided before it is downloaded
- `DELIVERIES = {"candidates": Delivery(...)}`: how a job of that kind reaches its chat
- `TEXT = handler`: plain text addressed to the bot (one feature has it)

The Telegram handlers and the console look up the same tables, so both are the same
conversation.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType

from bot.core import Core, MalformedPress
from bot.follower import Delivery
from bot.i18n import plain, t
from bot.replies import Incoming, Press

log = logging.getLogger(__name__)

MAX_BUTTON_DATA_BYTES = 64  # Telegram's callback_data limit: longer data is none of ours

Command = Callable[[Core, Incoming, list[str]], Awaitable[None]]
ButtonHandler = Callable[[Core, Press, list[str]], Awaitable[str | None]]
Accepts = Callable[[Core, int, str, bool], bool]
FileHandler = Callable[[Core, Incoming], Awaitable[None]]
TextHandler = Callable[[Core, Incoming], Awaitable[None]]


def parse_button_data(data: str) -> tuple[str, list[str]]:
    """`pick:<job>:1` → ("pick", ["<job>", "1"]); ("", []) for what no button of ours sends:
    empty, over Telegram's 64 bytes, or with control characters."""
    if not data or len(data.encode()) > MAX_BUTTON_DATA_BYTES or not data.isprintable():
        return "", []
    prefix, _, rest = data.partition(":")
    return prefix, rest.split(":") if rest else []


def _merged(tables: list[dict], what: str) -> dict:
    merged: dict = {}
    for table in tables:
        if twice := merged.keys() & table.keys():
            raise ValueError(f"{what} registered twice: {sorted(twice)}")
        merged |= table
    return merged


@dataclass(frozen=True)
class Router:
    commands: dict[str, Command]
    buttons: dict[str, ButtonHandler]
    files: list[tuple[Accepts, FileHandler]]
    deliveries: dict[str, Delivery[Core]]
    text: TextHandler

    @classmethod
    def of(cls, features: list[ModuleType]) -> Router:
        """The tables of `features`, merged (a name registered twice is a ValueError)."""
        (text,) = [f.TEXT for f in features if hasattr(f, "TEXT")]
        return cls(
            commands=_merged([getattr(f, "COMMANDS", {}) for f in features], "command"),
            buttons=_merged([getattr(f, "BUTTONS", {}) for f in features], "button"),
            files=[entry for f in features for entry in getattr(f, "FILES", [])],
            deliveries=_merged([getattr(f, "DELIVERIES", {}) for f in features], "job kind"),
            text=text,
        )

    async def command(self, core: Core, message: Incoming, name: str) -> None:
        """`/name args`, with the arguments in `message.text`; an unknown name gets /help."""
        handler = self.commands.get(name) or self.commands["help"]
        await handler(core, message, message.text.split())

    async def press(self, core: Core, press: Press) -> str | None:
        """A button: its data's prefix names the handler, the rest (split at `:`) are its
        arguments. The presser is admitted first, as a message's sender is (a short notice when
        not). Data none of our buttons sends (stale, forged, garbled) gets a notice and a log
        line, never an exception: the press is answered either way."""
        if refusal := core.refusal(press.user, press.place):
            return plain(t(core.language(press.user), *refusal[:1], **refusal[1]))
        prefix, args = parse_button_data(press.data)
        handler = self.buttons.get(prefix)
        try:
            if handler is None:
                raise MalformedPress("no button has this prefix")
            return await handler(core, press, args)
        except MalformedPress as exc:
            log.warning("ignored button data %r from user %s: %s", press.data, press.user.id, exc)
            return t(core.language(press.user), "button_stale")

    def file_handler(
        self, core: Core, user_id: int, filename: str, as_photo: bool
    ) -> FileHandler | None:
        """Who takes this attachment, if anyone (asked before downloading it)."""
        for accepts, handler in self.files:
            if accepts(core, user_id, filename, as_photo):
                return handler
        return None
