"""What the queue's users share: job states, priorities, the job record and the queue's errors.

Stdlib only, so the client (and through it the bot) can name the final states without the
SQLite queue (`queue_sqlite.py`) or anything else of the service.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

DEFAULT_MAX_QUEUE = 200  # as EngineConfig.max_queue
DEFAULT_MAX_ATTEMPTS = 3  # as EngineConfig.max_attempts
DEFAULT_RUN_S = 10.0  # retry_after guess before any job has finished: a poster takes ~10 s
THROUGHPUT_WINDOW_S = 300.0  # retry_after: jobs finished per second over the last 5 minutes
# Retry-After bounds: at least a second; past 10 minutes a client had better ask again soon
# than trust an estimate made from a queue that will have changed by then.
MIN_RETRY_AFTER_S = 1
MAX_RETRY_AFTER_S = 600


class Priority(IntEnum):
    """Priority class; lower values are claimed first."""

    ADMIN = 0  # admin test generations: the people fixing things should not wait
    USER = 1  # user posters: interactive, someone is looking at the chat
    TRAINING = 2  # LoRA training: long-running, nobody is waiting on it second by second


class State(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"  # failed for good on the first try: retrying would not help (bad input)
    CANCELLED = "cancelled"
    DEAD = "dead"  # retryable failures or lost workers used up max_attempts


FINAL_STATES = frozenset({State.DONE, State.FAILED, State.CANCELLED, State.DEAD})


class QueueFull(Exception):
    """`submit` refused a job because `max_queue` jobs are already queued."""

    def __init__(self, depth: int, retry_after_s: int) -> None:
        super().__init__(f"queue is full ({depth} jobs queued); try again in {retry_after_s} s")
        self.depth = depth
        self.retry_after_s = retry_after_s


class JobNotFound(KeyError):
    """No job has this id."""


class JobStateError(ValueError):
    """The job is not in a state that allows this operation (e.g. completing a queued job)."""


class LeaseLost(JobStateError):
    """The job is running under another worker: this worker's lease expired and it was requeued."""


@dataclass(frozen=True)
class Job:
    id: str
    kind: str  # "txt2img", "train", ...
    params: dict[str, Any]
    user: str
    priority: Priority
    turn: int  # round-robin round inside the priority class (see the module docstring)
    state: State
    attempts: int  # claims not given back by release(); see the module docstring
    max_attempts: int
    idempotency_key: str | None
    batch_key: str | None  # jobs with equal non-null batch keys (and kind) may run as one batch
    created_at: float
    started_at: float | None  # time of the latest claim
    finished_at: float | None
    lease_owner: str | None
    lease_expires_at: float | None
    progress: dict[str, Any] | None  # {"step": int, "total": int, "stage": str}
    outputs: list[str]
    error: str | None  # why it failed, died, or why the previous attempt ended (English)
    error_code: str | None  # the same as a stable code (engine.errors, docs/engine-api.md)
    error_values: dict[str, Any] | None  # the values the code's message is made of
    cancel_requested: bool
    info: dict[str, Any] | None  # result details from the worker (seeds, infotexts, ...)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def wait_s(self) -> float | None:
        """Seconds from submit to the latest claim."""
        return None if self.started_at is None else self.started_at - self.created_at

    @property
    def run_s(self) -> float | None:
        """Seconds from the latest claim to the end."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        fields = dict(row)
        for name in ("params", "progress", "outputs", "info", "error_values"):
            if fields[name] is not None:
                fields[name] = json.loads(fields[name])
        fields["priority"] = Priority(fields["priority"])
        fields["state"] = State(fields["state"])
        fields["cancel_requested"] = bool(fields["cancel_requested"])
        return cls(**fields)


@dataclass(frozen=True)
class PoolStats:
    """One worker pool's figures for /metrics: now (queued, running) and totals since the queue
    was created (the counters)."""

    pool: str
    queued: int
    running: int  # in flight: claimed and not ended
    reclaimed: int  # leases that ran out and were taken back from a worker that stopped renewing
    dead_lettered: int  # jobs that used up their attempts
    done_by_worker: dict[str, int]  # jobs each worker completed


# The job record's fields and their stored types, as both backends keep them (dicts and lists
# as JSON text, cancel_requested as 0/1).
JOB_FIELDS = {
    "id": str,
    "kind": str,
    "params": str,
    "user": str,
    "priority": int,
    "turn": int,
    "state": str,
    "attempts": int,
    "max_attempts": int,
    "idempotency_key": str,
    "batch_key": str,
    "created_at": float,
    "started_at": float,
    "finished_at": float,
    "lease_owner": str,
    "lease_expires_at": float,
    "progress": str,
    "outputs": str,
    "error": str,
    "error_code": str,
    "error_values": str,
    "cancel_requested": int,
    "info": str,
}


def retry_after_estimate(
    depth: int, finished: int, first_start: float | None, now: float, workers: int
) -> int:
    """Seconds until a full queue has room: `depth` jobs at the rate jobs left the queue (in
    any way) over the last THROUGHPUT_WINDOW_S, `finished` of them, the oldest started at
    `first_start`. Jobs of one batch finish together, so batching counts; with no recent finish,
    DEFAULT_RUN_S a job per worker. Bounded to MIN_RETRY_AFTER_S..MAX_RETRY_AFTER_S."""
    if finished:
        # from when the oldest of them started (or the window's start) until now
        span = max(1.0, now - max(first_start, now - THROUGHPUT_WINDOW_S))
        estimate = depth * span / finished
    else:
        estimate = depth * DEFAULT_RUN_S / workers
    return min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, math.ceil(estimate)))


def check_submit(
    kind: str, params: Any, user: str, priority: Any, max_attempts: int
) -> tuple[Priority, int]:
    """What every queue checks before a submit: a ValueError naming the bad argument, else the
    priority as a Priority and the attempts allowed."""
    if not kind:
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    if not user:
        raise ValueError(f"user must be a non-empty string, got {user!r}")
    if priority not in set(Priority):
        raise ValueError(f"priority must be one of {[p.name for p in Priority]}, got {priority!r}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
    return Priority(priority), max_attempts


def check_at_least_one(**values: int) -> None:
    """A queue's sizes (max_queue, max_attempts, workers): each at least 1."""
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value!r}")


def check_claim(lease_s: float, max_batch: int) -> None:
    if lease_s <= 0:
        raise ValueError(f"lease_s must be positive, got {lease_s!r}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch!r}")
