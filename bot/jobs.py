"""Submitting engine jobs for a chat, following them, and delivering their results once.

Every job the bot submits is saved in bot.db before the acknowledgement goes out, and marked
delivered only after its result is sent; `resume()` follows whatever is left after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bot.i18n import t
from bot.keyboards import choose_keyboard
from bot.replies import Outbox, Picture, Reply
from bot.store import DONE, FAILED, JobRecord, Store
from engine.service.client import EngineClient, EngineError, EngineUnavailable
from posterbot.config import TelegramConfig

log = logging.getLogger(__name__)

FINAL_STATES = ("done", "failed", "cancelled", "dead")
ENGINE_RETRY_S = (1, 2, 5, 10, 30)  # waits while the engine is unreachable (e.g. restarting)
T = TypeVar("T")


def progress_line(language: str, event: dict[str, Any]) -> str:
    """One line under the acknowledgement: queue position, or steps done as a bar."""
    if event.get("type") == "queued" or event.get("state") == "queued":
        return t(language, "progress_queued", position=event.get("position") or "?")
    step, total = event.get("step") or 0, event.get("total") or 1
    filled = round(10 * step / total)
    stage = "progress_hires" if event.get("stage") == "hires" else "progress_steps"
    return t(language, stage, bar="▓" * filled + "░" * (10 - filled), step=step, total=total)


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
        self._last_text = f"{record.summary}\n\n{shown}"
        self._last_edit = 0.0
        self._pending: str | None = None
        self._sender: asyncio.Task | None = None

    async def show(self, line: str, *, force: bool = False) -> None:
        text = f"{self.record.summary}\n\n{line}"
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


class Jobs:
    def __init__(
        self,
        engine: EngineClient,
        store: Store,
        outbox: Outbox,
        telegram: TelegramConfig,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.store = store
        self.outbox = outbox
        self.telegram = telegram
        self.sleep = sleep
        self._tasks: dict[str, asyncio.Task] = {}

    async def start(self, record: JobRecord, queue_position: int | None) -> None:
        """Acknowledge a submitted job in its chat, save it, and follow it."""
        # Saved before anything is sent: a crash after this point still delivers the result.
        self.store.save_job(record)
        line = progress_line(record.language, {"type": "queued", "position": queue_position})
        await self._acknowledge(record, line)
        self.follow(record, shown=line)

    async def _acknowledge(self, record: JobRecord, line: str) -> None:
        """Send the status message (the summary with a progress line) and keep its id."""
        record.status_message_id = await self.outbox.send(
            record.place, Reply(f"{record.summary}\n\n{line}")
        )
        self.store.save_job(record)

    def follow(self, record: JobRecord, shown: str = "") -> None:
        """Follow a job in the background; `shown` is the progress line its message has now."""
        if record.job_id not in self._tasks:
            task = asyncio.create_task(self._follow(record, shown), name=f"follow-{record.job_id}")
            self._tasks[record.job_id] = task
            task.add_done_callback(lambda _: self._tasks.pop(record.job_id, None))

    def resume(self) -> int:
        """Follow every job whose result has not been delivered (after a restart)."""
        records = self.store.undelivered_jobs()
        for record in records:
            self.follow(record)
        return len(records)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_idle(self) -> None:
        """Until every followed job is delivered (tests, benchmarks, console)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    def status_message(self, record: JobRecord, shown: str) -> StatusMessage:
        """The job's status message, edited at the chat's progress rate (groups slower)."""
        interval = self.telegram.progress_interval_private_s
        if record.place.is_group:
            interval = self.telegram.progress_interval_group_s
        return StatusMessage(self.outbox, record, interval, shown)

    async def _follow(self, record: JobRecord, shown: str) -> None:
        try:
            if not record.status_message_id:  # the bot died between saving the job and its ack
                shown = progress_line(record.language, {"type": "queued"})  # the next event tells
                await self._acknowledge(record, shown)
            status = self.status_message(record, shown)
            try:
                job = await self._watch(record, status)
                if job["state"] == "done":
                    await self._deliver(record, job, status)
                else:
                    reason = job.get("error") or job["state"]
                    await status.show(t(record.language, "job_failed", reason=reason), force=True)
                    self.finish(record, FAILED)
            finally:
                status.close()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivering job %s failed", record.job_id)
            # Left undelivered: the next start tries again; meanwhile the user knows.
            with contextlib.suppress(Exception):
                await self.outbox.send(record.place, Reply(t(record.language, "delivery_failed")))

    async def _watch(self, record: JobRecord, status: StatusMessage) -> dict[str, Any]:
        """Follow the job's events until it ends; returns the final job."""
        for wait in (*ENGINE_RETRY_S, *[ENGINE_RETRY_S[-1]] * 100):
            try:
                job = await self.engine.job(record.job_id)
                if job["state"] in FINAL_STATES:
                    return job
                async for event in self.engine.events(record.job_id):
                    if event["type"] in FINAL_STATES:
                        return event["job"]
                    await status.show(progress_line(record.language, event))
            except EngineUnavailable:
                log.warning("engine unreachable while following %s; retrying", record.job_id)
                await self.sleep(wait)
        raise EngineUnavailable(f"engine unreachable while following job {record.job_id}")

    async def _deliver(self, record: JobRecord, job: dict[str, Any], status: StatusMessage) -> None:
        record.seeds = list(job["info"].get("all_seeds") or [])
        record.subseeds = list(job["info"].get("all_subseeds") or [])
        record.outputs = list(job["outputs"])
        self.store.save_job(record)
        pictures = [
            Picture(
                png=await self.engine.output(path),
                caption=self.caption(record, index),
                filename=f"poster-{record.seeds[index]}.png",
            )
            for index, path in enumerate(record.outputs)
        ]
        elapsed = job.get("finished_at", 0) - job.get("created_at", 0)
        await status.show(t(record.language, "job_done", seconds=f"{elapsed:.1f}"), force=True)
        place = record.place
        if record.kind == "final":
            photo = await self._retrying(lambda: self.outbox.send_photo(place, pictures[0]))
            document = await self._retrying(lambda: self.outbox.send_document(place, pictures[0]))
            shown = [(photo, 0), (document, 0)]
        else:
            album = await self._retrying(lambda: self.outbox.send_album(place, pictures))
            shown = list(zip(album, range(len(pictures)), strict=True))
            choose = Reply(
                t(record.language, "choose", count=len(pictures)),
                choose_keyboard(record.language, record.job_id, len(pictures)),
            )
            await self._retrying(lambda: self.outbox.send(place, choose))
        for message_id, index in shown:
            self.store.remember_message(place.chat_id, message_id, record.job_id, index)
        self.finish(record, DONE)

    def caption(self, record: JobRecord, index: int) -> str:
        params = record.params
        values = {"number": index + 1, "seed": record.seeds[index]}
        if record.kind == "final":
            width, height = params["width"], params["height"]
            scale = params.get("hr_scale") or 2.0
            values |= {"size": f"{round(width * scale)}×{round(height * scale)}"}
            return t(record.language, "caption_final", **values)
        if params.get("subseed_strength"):
            values |= {"subseed": record.subseeds[index]}
            return t(record.language, "caption_variation", **values)
        return t(record.language, "caption_candidate", **values)

    def finish(self, record: JobRecord, state: str) -> None:
        """The chat has what it will get of this job: not followed again after a restart."""
        record.state, record.delivered = state, True
        self.store.save_job(record)

    async def _retrying(self, send: Callable[[], Awaitable[T]]) -> T:
        """Send, retrying failures with backoff (flood waits are handled below, by the
        rate limiter); the last failure propagates so the caller can report it."""
        for attempt in range(self.telegram.send_retries):
            try:
                return await send()
            except (asyncio.CancelledError, EngineError):
                raise
            except Exception as exc:
                log.warning("send failed (attempt %d): %r; retrying", attempt + 1, exc)
                await self.sleep(min(2**attempt, 30))
        return await send()
