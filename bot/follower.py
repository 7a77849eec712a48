"""One follower for every kind of job: engine events in, the chat's status message and results out.

Every job the bot submits is saved in bot.db before its acknowledgement goes out, and marked
delivered only after its result is sent; `resume()` follows whatever is left after a restart.
While the engine is unreachable (restarting) the follower waits and tries again. What a job
kind sends is its `Delivery`, registered by the feature that submits that kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bot.i18n import t
from bot.refusals import failure_text
from bot.replies import Outbox, Reply
from bot.status import StatusMessage, progress_line, status_text
from bot.store import CANCELLED, DONE, FAILED, JobRecord, Store
from engine.service.client import FINAL_STATES, EngineClient, EngineError, EngineUnavailable
from posterbot.config import TelegramConfig

log = logging.getLogger(__name__)

ENGINE_RETRY_S = (1, 2, 5, 10, 30)  # waits while the engine is unreachable (e.g. restarting)
C = TypeVar("C")  # what deliveries work with (the bot's core)
T = TypeVar("T")


async def show_progress(core: Any, record: JobRecord, event: dict, status: StatusMessage) -> None:
    """The default progress: queue position or a bar of steps under the acknowledgement."""
    await status.show(progress_line(record.language, event))


def finished(job: dict[str, Any]) -> bool:
    return job["state"] == "done"


@dataclass(frozen=True)
class Delivery(Generic[C]):
    """How one kind of job reaches its chat."""

    # The finished job's results (album, photo and file, grid ...).
    deliver: Callable[[C, JobRecord, dict[str, Any], StatusMessage], Awaitable[None]]
    # Each progress event (the default edits the status message's last line).
    progress: Callable[[C, JobRecord, dict[str, Any], StatusMessage], Awaitable[None]] = (
        show_progress
    )
    succeeded: Callable[[dict[str, Any]], bool] = finished  # whether `deliver` gets the job
    failed_key: str = "job_failed"  # {reason}
    lost_key: str = "delivery_failed"  # the follower gave up for now; {job}
    admins_only: bool = False  # only admins submit it: a failure without a code shows the detail
    # The status line once the results are out ({seconds}: the engine's time); None when
    # `deliver` writes its own. Said after the results, so the pictures never wait on this edit.
    done_key: str | None = "job_done"


class Follower(Generic[C]):
    def __init__(
        self,
        core: C,
        engine: EngineClient,
        store: Store,
        outbox: Outbox,
        telegram: TelegramConfig,
        deliveries: dict[str, Delivery[C]],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.core = core
        self.engine = engine
        self.store = store
        self.outbox = outbox
        self.telegram = telegram
        self.deliveries = deliveries
        self.sleep = sleep
        self._tasks: dict[str, asyncio.Task] = {}

    async def start(self, record: JobRecord, queue_position: int | None) -> None:
        """Acknowledge a submitted job in its chat, save it, and follow it."""
        # Saved before anything is sent: a crash after this point still delivers the result.
        self.store.save_job(record)
        line = progress_line(record.language, {"type": "queued", "position": queue_position})
        await self._acknowledge(record, line)
        self.follow(record, shown=line)

    def follow(self, record: JobRecord, shown: str = "") -> None:
        """Follow a job in the background; `shown` is the progress line its message has now."""
        if record.job_id not in self._tasks:
            task = asyncio.create_task(self._follow(record, shown), name=f"follow-{record.job_id}")
            self._tasks[record.job_id] = task
            task.add_done_callback(lambda _: self._tasks.pop(record.job_id, None))

    def resume(self) -> int:
        """Follow every job whose result has not been delivered (after a restart)."""
        records = self.store.undelivered_jobs(tuple(self.deliveries))
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

    def finish(self, record: JobRecord, state: str) -> None:
        """The chat has what it will get of this job: not followed again after a restart."""
        record.state, record.delivered = state, True
        self.store.save_job(record)

    async def retrying(self, send: Callable[[], Awaitable[T]]) -> T:
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

    async def _acknowledge(self, record: JobRecord, line: str) -> None:
        """Send the status message (the summary with a progress line) and keep its id."""
        record.status_message_id = await self.outbox.send(
            record.place, Reply(status_text(record.summary, line))
        )
        self.store.save_job(record)

    def _status_message(self, record: JobRecord, shown: str) -> StatusMessage:
        """The job's status message, edited at the chat's progress rate (groups slower)."""
        interval = self.telegram.progress_interval_private_s
        if record.place.is_group:
            interval = self.telegram.progress_interval_group_s
        return StatusMessage(self.outbox, record, interval, shown)

    async def _follow(self, record: JobRecord, shown: str) -> None:
        delivery = self.deliveries[record.kind]
        try:
            if not record.status_message_id:  # the bot died between saving the job and its ack
                shown = progress_line(record.language, {"type": "queued"})  # the next event tells
                await self._acknowledge(record, shown)
            status = self._status_message(record, shown)
            try:
                job = await self._watch(record, status, delivery)
                await self._end(record, job, status, delivery)
            finally:
                status.close()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("following job %s failed", record.job_id)
            # Left undelivered: the next start tries again; meanwhile the chat knows.
            with contextlib.suppress(Exception):
                text = t(record.language, delivery.lost_key, job=record.job_id)
                await self.outbox.send(record.place, Reply(text))

    async def _watch(
        self, record: JobRecord, status: StatusMessage, delivery: Delivery[C]
    ) -> dict[str, Any]:
        """Follow the job's events until it ends; returns the final job."""
        for wait in (*ENGINE_RETRY_S, *[ENGINE_RETRY_S[-1]] * 100):
            try:
                job = await self.engine.job(record.job_id)
                if job["state"] in FINAL_STATES:
                    return job
                async for event in self.engine.events(record.job_id):
                    if event["type"] in FINAL_STATES:
                        return event["job"]
                    await delivery.progress(self.core, record, event, status)
            except EngineUnavailable:
                log.warning("engine unreachable while following %s; retrying", record.job_id)
                await self.sleep(wait)
        raise EngineUnavailable(f"engine unreachable while following job {record.job_id}")

    async def _end(
        self, record: JobRecord, job: dict[str, Any], status: StatusMessage, delivery: Delivery[C]
    ) -> None:
        """Deliver a finished job; a cancelled one says so once, a failed one says why."""
        language = record.language
        if delivery.succeeded(job):
            await delivery.deliver(self.core, record, job, status)
            if delivery.done_key:
                elapsed = job.get("finished_at", 0) - job.get("created_at", 0)
                await status.show(
                    t(language, delivery.done_key, seconds=f"{elapsed:.1f}"), force=True
                )
            self.finish(record, DONE)
        elif job["state"] == "cancelled":
            await status.show(t(language, "job_cancelled"), force=True)
            self.finish(record, CANCELLED)
        else:
            reason = failure_text(language, job, admin=delivery.admins_only)
            await status.show(t(language, delivery.failed_key, reason=reason), force=True)
            self.finish(record, FAILED)
