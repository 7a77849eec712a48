"""Job events for everyone who follows a job: `/v1/jobs/{id}/events` streams and waiting WebUI
requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

# The longest the watcher waits between reads of the followed jobs. Both queues push a notice
# of every change (a datagram for the SQLite file, pub/sub for Valkey) that wakes it at once;
# this slow tick is only the safety net for a notice lost (a second service on one file).
EVENT_POLL_S = 1.0


class JobWatcher:
    """One reader for every follower of a job (event streams, waiting WebUI requests).

    Each time a job changed (or the safety tick passed) it reads all followed jobs in one query
    (and the queue order once, if any is queued) and puts each job's event into its followers'
    inboxes when it changed for them, so 200 open streams cost one read per change, not 200.
    """

    def __init__(
        self,
        read: Callable[[list[str]], dict[str, dict[str, Any]]],
        wait: Callable[[float], None] = time.sleep,
        tick_s: float = EVENT_POLL_S,
    ) -> None:
        """`read(job_ids)`: each job's current event; `wait(seconds)`: returns when a job may
        have changed, at the latest after `seconds` (both blocking, run off the loop)."""
        self.read = read
        self.wait = wait
        self.tick_s = tick_s
        self._followers: dict[str, list[_Follower]] = {}
        self._wanted = asyncio.Event()  # set while anyone follows a job

    @contextlib.contextmanager
    def follow(self, job_id: str) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """An inbox of the job's events as they change (from its state at the next tick on);
        the last one is final (its `type` is one of the final states)."""
        follower = _Follower()
        self._followers.setdefault(job_id, []).append(follower)
        self._wanted.set()
        try:
            yield follower.inbox
        finally:
            self._followers[job_id].remove(follower)
            if not self._followers[job_id]:
                del self._followers[job_id]

    async def run(self) -> None:
        """Read and hand out events every tick while anyone follows (run it as a task)."""
        while True:
            if not self._followers:
                self._wanted.clear()
                await self._wanted.wait()
            try:
                events = await asyncio.to_thread(self.read, list(self._followers))
            except Exception:  # a locked or busy database: try again next tick
                log.exception("reading followed jobs failed")
                events = {}
            for job_id, event in events.items():
                for follower in self._followers.get(job_id, ()):
                    follower.offer(event)
            try:
                await asyncio.to_thread(self.wait, self.tick_s)
            except Exception:  # the queue's server away: fall back to the tick
                log.exception("waiting for job changes failed")
                await asyncio.sleep(self.tick_s)


class _Follower:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.last: dict[str, Any] | None = None

    def offer(self, event: dict[str, Any]) -> None:
        if event != self.last:
            self.last = event
            self.inbox.put_nowait(event)
