"""A job's status message: its acknowledgement, edited in place with the job's progress."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from bot.i18n import MAX_MESSAGE_CHARS, shorten, t
from bot.replies import Outbox, Reply
from bot.store import JobRecord


def progress_line(language: str, event: dict[str, Any]) -> str:
    """One line under the acknowledgement: queue position, or steps done as a bar."""
    if event.get("type") == "queued" or event.get("state") == "queued":
        return t(language, "progress_queued", position=event.get("position") or "?")
    step, total = event.get("step") or 0, event.get("total") or 1
    filled = round(10 * step / total)
    stage = "progress_hires" if event.get("stage") == "hires" else "progress_steps"
    return t(language, stage, bar="▓" * filled + "░" * (10 - filled), step=step, total=total)


def status_text(summary: str, line: str) -> str:
    """The status message: the summary, cut to leave room for the progress line, and the line.
    One message always, so each edit shows the line (an edit of a cut-off text would not)."""
    return f"{shorten(summary, MAX_MESSAGE_CHARS - len(line) - 2)}\n\n{line}"


class StatusMessage:
    """The acknowledgement, edited in place with progress at most once per `interval_s`.

    Progress edits go out in the background, newest line wins: a chat held back by Telegram's
    flood limit skips the lines it could not show in time, and the job's delivery never waits
    for them. A forced line (done, failed) replaces whatever progress is still pending.
    """

    def __init__(self, outbox: Outbox, record: JobRecord, interval_s: float, shown: str) -> None:
        self.outbox = outbox
        self.record = record
        self.interval_s = interval_s
        self._last_text = status_text(record.summary, shown)
        self._last_edit = 0.0
        self._pending: str | None = None
        self._sender: asyncio.Task | None = None

    async def show(self, line: str, *, force: bool = False) -> None:
        text = status_text(self.record.summary, line)
        if force:
            self.close()
            if text != self._last_text:
                await self._edit(text, progress=False)
            return
        if text == self._last_text:
            return
        self._pending = text
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_pending())

    def close(self) -> None:
        """Drop pending progress (the job ended, or the bot is stopping)."""
        self._pending = None
        if self._sender is not None:
            self._sender.cancel()

    async def _send_pending(self) -> None:
        while self._pending is not None:
            wait = self._last_edit + self.interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            text, self._pending = self._pending, None
            if text is not None and text != self._last_text:
                await self._edit(text, progress=True)

    async def _edit(self, text: str, *, progress: bool) -> None:
        self._last_text, self._last_edit = text, time.monotonic()
        # Progress is a courtesy: a failed edit (flood limit, message deleted) is not an error.
        with contextlib.suppress(Exception):
            reply = Reply(text, progress=progress)
            await self.outbox.edit(self.record.place, self.record.status_message_id, reply)
