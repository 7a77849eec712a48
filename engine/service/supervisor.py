"""Worker processes, seen from the service: one per device, started, watched and restarted.

A dead worker's running jobs get their attempt back as failed-with-retry at once (the error says
how it died) instead of waiting for the lease. A job running past its kind's timeout gets its
worker killed and fails for good: a render that slow would time out again, and retrying it would
hold the device from everyone else for attempts × N s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import secrets
import threading
import time
from typing import Any

from engine.service.kinds import KINDS
from engine.service.queue_base import JobQueueBase
from engine.service.queue_common import Job, JobStateError, State
from engine.service.worker import worker_main
from posterbot import logs
from posterbot.config import Config

log = logging.getLogger(__name__)

MAX_RESTART_DELAY_S = 60.0  # a worker that keeps dying while loading (bad model) retries slowly
STOP_GRACE_S = 30.0  # SIGTERM → the worker releases its batch at the next step, then exits
RUNNING_SCAN_LIMIT = 1000  # running jobs are at most workers × max_batch; this is ample


@dataclasses.dataclass
class WorkerSlot:
    """One device's worker process, restarted whenever it dies."""

    device: str
    index: int
    worker_id: str = ""
    process: Any = None  # multiprocessing.Process of the current incarnation
    ready: Any = None  # multiprocessing.Event set once the engine is loaded
    restarts: int = 0
    load_failures: int = 0  # consecutive deaths before becoming ready
    next_start: float = 0.0
    timed_out: tuple[int, str] | None = None  # after a timeout kill: the limit (s) and its setting

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def status(self) -> dict[str, Any]:
        return {
            "id": self.worker_id,
            "device": self.device,
            "pid": self.process.pid if self.process is not None else None,
            "alive": self.alive(),
            "ready": self.alive() and self.ready.is_set(),
            "restarts": self.restarts,
        }


class Supervisor:
    """Starts one worker process per device and keeps them running (call `check` periodically)."""

    def __init__(self, config: Config, queue: JobQueueBase, devices: list[str]) -> None:
        """`devices`: one worker each, as `worker_devices` spells them out."""
        self.config = config
        self.queue = queue
        self.context = multiprocessing.get_context("spawn")  # never fork a process holding CUDA
        self.slots = [WorkerSlot(device, n) for n, device in enumerate(devices)]
        self._lock = threading.Lock()

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.worker_id = f"{slot.device}#{slot.index}-{secrets.token_hex(3)}"
        slot.ready = self.context.Event()
        slot.timed_out = None
        slot.process = self.context.Process(
            target=worker_main,
            args=(self.config, slot.device, slot.worker_id, slot.ready, logs.active()),
            name=f"posterbot-worker-{slot.index}",
        )
        slot.process.start()
        log.info("started worker %s (pid %d)", slot.worker_id, slot.process.pid)

    def check(self) -> None:
        """One supervision pass: time out overlong jobs, restart dead workers."""
        with self._lock:
            running = self.queue.list_jobs(state=State.RUNNING, limit=RUNNING_SCAN_LIMIT)
            now = time.time()
            for slot in self.slots:
                if slot.process is None:
                    if now >= slot.next_start:
                        self._spawn(slot)
                    continue
                mine = [job for job in running if job.lease_owner == slot.worker_id]
                if slot.alive():
                    self._enforce_timeout(slot, mine, now)
                if not slot.alive():
                    self._on_exit(slot, mine, now)

    def _enforce_timeout(self, slot: WorkerSlot, jobs: list[Job], now: float) -> None:
        """Kill the worker if one of its jobs has run longer than its kind may."""
        for job in jobs:
            kind = KINDS.get(job.kind)
            limit = kind.timeout_s(self.config) if kind else None
            if limit is not None and job.started_at is not None and now - job.started_at > limit:
                slot.timed_out = limit, kind.timeout
                log.error(
                    "worker %s: job %s ran past %d s; killing it", slot.worker_id, job.id, limit
                )
                slot.process.kill()
                slot.process.join()
                return

    def _on_exit(self, slot: WorkerSlot, jobs: list[Job], now: float) -> None:
        """Record how the dead worker's jobs ended and schedule its restart."""
        code = slot.process.exitcode
        for job in jobs:
            if slot.timed_out is not None:
                limit, setting = slot.timed_out
                error = f"took longer than {limit} s ({setting}); its worker was restarted"
                failure = {"code": "timeout", "values": {"seconds": limit}}
            else:
                error = f"worker {slot.worker_id} died (exit code {code}) running it"
                failure = {"code": "worker_died", "values": {}}
            # JobStateError: it finished or was released between the scan and now
            with contextlib.suppress(JobStateError):
                self.queue.fail(
                    job.id,
                    error,
                    retry=slot.timed_out is None,
                    worker_id=slot.worker_id,
                    **failure,
                )
        if slot.ready.is_set():
            slot.load_failures = 0
        else:
            slot.load_failures += 1
        delay = 0.0 if not slot.load_failures else min(MAX_RESTART_DELAY_S, 2.0**slot.load_failures)
        log.warning(
            "worker %s exited with code %s; restarting in %.0f s", slot.worker_id, code, delay
        )
        slot.process = None
        slot.restarts += 1
        slot.next_start = now + delay

    def run(self, stop: threading.Event) -> None:
        """Supervise every `poll_s` until `stop` is set (run it in a thread)."""
        while not stop.wait(self.config.engine.poll_s):
            try:
                self.check()
            except Exception:
                log.exception("supervisor pass failed")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every worker (their batches go back queued), kill those still running."""
        with self._lock:
            live = [slot.process for slot in self.slots if slot.alive()]
            for process in live:
                process.terminate()
            deadline = time.monotonic() + grace_s
            for process in live:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
                    process.join()

    def status(self) -> list[dict[str, Any]]:
        return [slot.status() for slot in self.slots]
