"""The job queue as the service and the workers see it: one interface, two backends.

`queue_sqlite.JobQueue` keeps jobs in one SQLite file (the embedded default: one host, no extra
service); `queue_redis.RedisQueue` keeps them in Valkey or Redis >= 6.2 streams, so workers on
other hosts claim from the same queue. `queue_backend.open_queue` picks one by `[queue] url`.
Both pass the same tests (tests/engine/test_queue.py runs every test against each), so what the
docstrings here promise holds for either:

- fair order: lower priority class first; inside a class, users take turns (round-robin), then
  older first; batch partners (same kind and batch key) may run ahead of their turn;
- a claim is a lease renewed by `heartbeat`; a lease that runs out puts the job back (or dead
  once `max_attempts` claims ended badly), and the worker that lost it can no longer record a
  result: a job is recorded once however many workers ran it;
- an idempotency key makes a repeated submit return the first job.

The job record, states and errors are in `queue_common.py`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from engine.service.queue_common import Job, PoolStats, Priority, State


class JobQueueBase(abc.ABC):
    """One process's handle on the queue; thread-safe, open one per process."""

    # What a call raises while the queue's server is unreachable (a worker waits it out), and
    # the server in words for the log (no password). The SQLite file has no server.
    unavailable: tuple[type[Exception], ...] = ()
    where: str = "file"
    max_queue: int  # queued jobs beyond this are refused with QueueFull
    max_attempts: int  # default of submit's max_attempts
    now: Callable[[], float]  # the clock of recorded times (a test injects its own)

    # -- submitting and reading --------------------------------------------------------------

    @abc.abstractmethod
    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        user: str,
        *,
        priority: Priority = Priority.USER,
        idempotency_key: str | None = None,
        batch_key: str | None = None,
        max_attempts: int | None = None,
    ) -> Job:
        """Queue a job and return it. A known idempotency key returns that job unchanged (even
        when the queue is full); `QueueFull` when `max_queue` jobs are queued; `ValueError`
        naming a bad argument."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job:
        """The job with this id; raises `JobNotFound`."""

    @abc.abstractmethod
    def get_many(self, job_ids: list[str]) -> list[Job]:
        """The jobs with these ids that exist (event streams read them together)."""

    @abc.abstractmethod
    def list_jobs(
        self, *, user: str | None = None, state: State | str | None = None, limit: int = 50
    ) -> list[Job]:
        """Jobs, newest first, optionally only one user's and/or one state's."""

    @abc.abstractmethod
    def position(self, job_id: str) -> int | None:
        """1-based place of a queued job in the fair order (1 = next); None if not queued."""

    @abc.abstractmethod
    def positions(self) -> dict[str, int]:
        """The 1-based place of every queued job in the fair order."""

    @abc.abstractmethod
    def depth(self) -> int:
        """Number of queued jobs."""

    @abc.abstractmethod
    def counts(self) -> dict[State, int]:
        """Number of jobs in each state, every state present."""

    @abc.abstractmethod
    def pool_stats(self) -> list[PoolStats]:
        """Each worker pool's depth, jobs in flight, and its reclaimed, dead-lettered and
        per-worker completed totals (/metrics)."""

    @abc.abstractmethod
    def finished_since(self, since: float) -> list[Job]:
        """Jobs finished at or after `since`, oldest first (their wait_s/run_s feed metrics)."""

    # -- worker side -------------------------------------------------------------------------

    @abc.abstractmethod
    def claim(
        self,
        worker_id: str,
        lease_s: float,
        max_batch: int = 1,
        kinds: tuple[str, ...] | None = None,
    ) -> list[Job]:
        """Lease the next job in fair order to `worker_id`, plus up to `max_batch - 1` queued
        partners of the same kind and non-null batch key; [] when there is nothing to do. Each
        claimed job gets `attempts + 1`. Expired leases are put back first. `kinds`: only jobs
        of these kinds (a training worker renders waiting posters between steps)."""

    @abc.abstractmethod
    def heartbeat(self, worker_id: str, job_ids: list[str], lease_s: float) -> list[str]:
        """Renew the leases `worker_id` still holds; returns those ids (a missing one was lost)."""

    @abc.abstractmethod
    def set_progress(self, job_id: str, step: int, total: int, stage: str, **details: Any) -> None:
        """Record a running job's progress (throttle calls, e.g. 2 per s); `details` are more
        JSON fields of this kind of job (training: epoch, loss, eta_s ...)."""

    @abc.abstractmethod
    def is_cancel_requested(self, job_id: str) -> bool:
        """True once `cancel` was called on the job (check it between denoising steps)."""

    @abc.abstractmethod
    def complete(
        self,
        job_id: str,
        outputs: list[str],
        info: dict[str, Any] | None = None,
        *,
        worker_id: str | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Job:
        """running → done with its outputs and info. With `worker_id`, `LeaseLost` if another
        worker holds the job now; `JobStateError` if it is not running. `files`: the bytes of
        the outputs, by name, from a worker on another host: a backend shared by hosts stores
        them with the result for the service to collect (shared_files.py); the SQLite queue's
        workers share the service's disk and refuse them."""

    @abc.abstractmethod
    def mark_cancelled(
        self,
        job_id: str,
        *,
        worker_id: str | None = None,
        outputs: list[str] | None = None,
        info: dict[str, Any] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Job:
        """running → cancelled after `cancel` asked, keeping what was made before stopping
        (`files` as for `complete`)."""

    @abc.abstractmethod
    def fail(
        self,
        job_id: str,
        error: str,
        *,
        retry: bool,
        worker_id: str | None = None,
        code: str = "internal",
        values: dict[str, Any] | None = None,
    ) -> Job:
        """End a running attempt with `error` and its stable `code` and `values`: failed
        (retry=False), else queued again, or dead when the attempts are used up."""

    @abc.abstractmethod
    def release(self, job_id: str, *, worker_id: str | None = None) -> Job:
        """running → queued without spending an attempt (a worker shutting down on SIGTERM)."""

    @abc.abstractmethod
    def requeue_expired(self, now: float | None = None) -> list[Job]:
        """Put running jobs whose lease ran out back (queued, dead, or cancelled when asked);
        returns them in their new state."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> Job:
        """queued → cancelled now; running → cancel_requested (the worker stops between steps);
        finished → unchanged."""

    # -- operations --------------------------------------------------------------------------

    @abc.abstractmethod
    def dead_letters(self, limit: int = 100) -> list[Job]:
        """Dead jobs (attempts used up), newest first, each with its last error."""

    @abc.abstractmethod
    def requeue_dead(self, job_id: str) -> Job:
        """A dead job back in the queue with fresh attempts (an operator fixed the cause);
        `JobStateError` if it is not dead."""

    @abc.abstractmethod
    def announce(self, worker_id: str, capabilities: dict[str, Any]) -> None:
        """Say what a worker runs (models, LoRAs, VRAM), so submits go to a pool that runs it."""

    @abc.abstractmethod
    def workers_announced(self) -> list[dict[str, Any]]:
        """What workers said they run (`announce`), recent ones only."""

    @abc.abstractmethod
    def wait_for_changes(self, timeout_s: float) -> None:
        """Return soon after any job changed (the change pushed by whoever made it: a UNIX
        socket datagram for the SQLite file, the events channel for Valkey), or after
        `timeout_s`; one caller per process (the service's event watcher)."""

    @abc.abstractmethod
    def wait_for_work(self, timeout_s: float) -> None:
        """Return soon after a job became claimable (submitted, given back, requeued), or after
        `timeout_s`: what an idle worker waits on between claims, so an idle engine starts a
        request at once instead of at its next look. A server that is away is not an error
        here (the wait just runs out): the worker's next claim deals with the outage."""

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the connection."""

    def __enter__(self) -> JobQueueBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
