"""Durable job queue in one SQLite file, shared by the engine service and its worker processes.

Every process opens its own `JobQueue` on the same file. Writes run inside `BEGIN IMMEDIATE`
(a deferred `BEGIN` that later upgrades to a write lock fails with SQLITE_BUSY under concurrent
claimers instead of waiting), the database is in WAL mode so readers never block writers, and
`synchronous=FULL` makes every committed claim or result survive a power cut.

The file cannot tell another process that it changed, so every commit also sends a one-byte
datagram to a UNIX socket named after the file (Linux's abstract namespace: no file to clean
up, no path-length limit); the service's event watcher listens there (`wait_for_changes`) and
re-reads at once instead of on a tick. Best effort: with nobody listening, or the listener's
buffer full (it is behind and will re-read anyway), the datagram is dropped. Idle workers listen
the same way on their own addresses (`wait_for_work`: slot k of `WAKE_SLOTS` per file), and a
commit that makes a job claimable (submit, give back, requeue) wakes every slot, so a request
sent to an idle engine is claimed at once rather than at the worker's next look.

Life of a job::

    queued ──claim──▶ running ──complete──▶ done
      ▲                 │ ├────fail(retry=False)──▶ failed
      │                 │ ├────mark_cancelled─────▶ cancelled   (after cancel() was requested)
      └─release / fail(retry=True) / lease expiry───┘ (or dead when no attempts are left)
    queued ──cancel──▶ cancelled

Attempts count claims: `claim` adds one to `attempts`, and only `release` (a clean shutdown, the
SIGTERM path) gives that attempt back. A job claimed once, whose worker is killed with `kill -9`,
then claimed again after its lease expired and completed, ends with `attempts == 2`. When a claim
ends badly (a retryable failure or an expired lease) and `attempts` has reached `max_attempts`,
the job is `dead` with the reason in `error`; otherwise it goes back to `queued`.

Fair order (used by `claim` and `position`): lower priority class first (`Priority.ADMIN` admin
tests, then `Priority.USER` posters, then `Priority.TRAINING`); inside a class, lower `turn`
first, then older first. `turn` is a round-robin round number given at submit and kept for the
job's life (a requeued job keeps its place): the round now being served in the class (the lowest
queued turn; with nothing queued, the highest running turn; else 0), or the user's next round
(1 + their highest queued or running turn in the class), whichever is later. So user A's twenty
queued requests and user B's two are taken A, B, A, B, A, A, ..., and a position stays true as
jobs ahead of it are claimed. Batch partners (see `claim`) may run ahead of their turn.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from engine.service.queue_base import JobQueueBase
from engine.service.queue_common import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_QUEUE,
    JOB_FIELDS,
    THROUGHPUT_WINDOW_S,
    Job,
    JobNotFound,
    JobStateError,
    LeaseLost,
    PoolStats,
    Priority,
    QueueFull,
    State,
    check_at_least_one,
    check_claim,
    check_submit,
    retry_after_estimate,
)
from posterbot.config import Config

BUSY_TIMEOUT_S = 30.0  # a claim waits this long for the write lock; commits take milliseconds
QUEUE_FILE = "engine.db"  # under data_dir, next to bot.db
WAKE_SLOTS = 16  # idle workers a commit can wake at once per file (one per GPU: plenty)


def _bound_socket(addresses: list[str]) -> socket.socket | None:
    """A datagram socket listening on the first free address, or None when all are taken."""
    for address in addresses:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            listener.bind(address)
        except OSError:
            listener.close()
            continue
        listener.setblocking(False)
        return listener
    return None


def _drain_when_ready(listener: socket.socket, timeout_s: float) -> None:
    """Wait up to `timeout_s` for a datagram, then take all that arrived."""
    ready, _, _ = select.select([listener], [], [], timeout_s)
    if ready:
        with contextlib.suppress(BlockingIOError):
            while True:
                listener.recv(16)


_COLUMNS = JOB_FIELDS
_NOT_NULL = [
    "kind", "params", "user", "priority", "turn", "state", "attempts", "max_attempts",
    "created_at", "outputs", "cancel_requested",
]  # fmt: skip
_SELECT_JOB = f"SELECT {', '.join(_COLUMNS)} FROM jobs"

_FAIR_ORDER = "priority, turn, created_at, rowid"  # claim order of queued jobs


class JobQueue(JobQueueBase):
    """One process's connection to the queue file; thread-safe, open one per process."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        workers: int = 1,
        now: Callable[[], float] = time.time,
        pool: str = "default",
    ) -> None:
        """`workers` only feeds the retry_after estimate; `now` is the clock (inject in tests);
        `pool`: the name /metrics gives this host's one pool."""
        check_at_least_one(max_queue=max_queue, max_attempts=max_attempts, workers=workers)
        self.path = Path(path)
        self.max_queue = max_queue
        self.max_attempts = max_attempts
        self.workers = workers
        self.now = now
        self.pool = pool
        self._lock = threading.Lock()
        # isolation_level=None: the driver opens no implicit transactions, we BEGIN ourselves
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        # change notices (module docstring): one address per queue file
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:32]
        self._events_address = f"\0posterbot-queue-{digest}"
        self._notifier = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notifier.setblocking(False)
        self._listener: socket.socket | None = None
        self._listening = True  # False once another process holds the address
        self._wake_addresses = [f"{self._events_address}-work-{k}" for k in range(WAKE_SLOTS)]
        self._wake: socket.socket | None = None
        with self._write():
            self._create_schema()

    def _create_schema(self) -> None:
        jobs = self.db.table("jobs")
        jobs.create(
            _COLUMNS,
            pk="id",
            not_null=_NOT_NULL,
            if_not_exists=True,
        )
        for name in ("error_code", "error_values"):  # queue files from before error codes
            if name not in jobs.columns_dict:
                jobs.add_column(name, str)
        jobs.create_index(["state", "priority", "turn", "created_at"], if_not_exists=True)
        jobs.create_index(["idempotency_key"], unique=True, if_not_exists=True)
        jobs.create_index(["user", "created_at"], if_not_exists=True)  # list_jobs(user=...)
        jobs.create_index(["finished_at"], if_not_exists=True)  # metrics, retry_after
        # /metrics totals: "reclaimed", "dead_lettered", "done:<worker id>"
        self.db.table("counters").create({"name": str, "value": int}, pk="name", if_not_exists=True)

    def _count(self, conn: sqlite3.Connection, name: str, by: int = 1) -> None:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def close(self) -> None:
        self.db.close()
        self._notifier.close()
        for listener in (self._listener, self._wake):
            if listener is not None:
                listener.close()

    def _notify(self, wake: bool = False) -> None:
        """Tell the listening watcher (if any) that the file changed; `wake`: idle workers too."""
        for address in [self._events_address, *(self._wake_addresses if wake else [])]:
            with contextlib.suppress(OSError):  # nobody listening, or its buffer full
                self._notifier.sendto(b"!", address)

    def wait_for_work(self, timeout_s: float) -> None:
        """Return when a job may have become claimable, or after `timeout_s` (an idle worker:
        it holds the first free wake slot; with none free it just waits)."""
        if self._wake is None:
            self._wake = _bound_socket(self._wake_addresses)
        if self._wake is None:
            time.sleep(timeout_s)
            return
        _drain_when_ready(self._wake, timeout_s)

    def wait_for_changes(self, timeout_s: float) -> None:
        """Return when a process committed a change to this file (its datagram arrived), or
        after `timeout_s`; one caller per file (the service's event watcher). Where the address
        is taken (a second service on the file) or not supported, this waits the whole timeout."""
        if self._listener is None and self._listening:
            self._listener = _bound_socket([self._events_address])
            self._listening = self._listener is not None
        if self._listener is None:
            time.sleep(timeout_s)
            return
        _drain_when_ready(self._listener, timeout_s)  # one re-read covers every change so far

    @contextlib.contextmanager
    def _write(self, wake: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction that holds the database's write lock from its first statement;
        `wake`: it can make a job claimable, so idle workers are told as well as the watcher."""
        with self._lock:
            conn = self.db.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._notify(wake)

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """The connection for reads; each statement sees one consistent snapshot (WAL)."""
        with self._lock:
            yield self.db.conn

    def _jobs(self, conn: sqlite3.Connection, sql: str, params: tuple | list) -> list[Job]:
        cursor = conn.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [Job.from_row(dict(zip(names, row, strict=True))) for row in cursor.fetchall()]

    def _job(self, conn: sqlite3.Connection, job_id: str) -> Job:
        jobs = self._jobs(conn, f"{_SELECT_JOB} WHERE id = ?", (job_id,))
        if not jobs:
            raise JobNotFound(job_id)
        return jobs[0]

    # -- submitting and reading -------------------------------------------------------------

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
        """Queue a job and return it.

        A submit with an idempotency key that is already in the queue (any state) returns that
        job unchanged and adds nothing, even when the queue is full. Raises `QueueFull` when
        `max_queue` jobs are queued, and `ValueError` naming a bad argument.
        """
        # 1. check inputs
        priority, max_attempts = check_submit(
            kind,
            params,
            user,
            priority,
            self.max_attempts if max_attempts is None else max_attempts,
        )
        params_json = json.dumps(params)
        with self._write(wake=True) as conn:
            # 2. a retried submit returns the job it already made
            if idempotency_key is not None:
                existing = self._jobs(
                    conn, f"{_SELECT_JOB} WHERE idempotency_key = ?", (idempotency_key,)
                )
                if existing:
                    return existing[0]
            # 3. refuse rather than queue without bound
            depth = self._depth(conn)
            if depth >= self.max_queue:
                raise QueueFull(depth, self._retry_after_s(conn, depth))
            # 4. insert
            job_id = secrets.token_hex(6)
            self.db.table("jobs").insert(
                {
                    "id": job_id,
                    "kind": kind,
                    "params": params_json,
                    "user": user,
                    "priority": int(priority),
                    "turn": self._next_turn(conn, user, priority),
                    "state": State.QUEUED.value,
                    "attempts": 0,
                    "max_attempts": max_attempts,
                    "idempotency_key": idempotency_key,
                    "batch_key": batch_key,
                    "created_at": self.now(),
                    "outputs": "[]",
                    "cancel_requested": 0,
                }
            )
            return self._job(conn, job_id)

    def get(self, job_id: str) -> Job:
        """The job with this id; raises `JobNotFound`."""
        with self._read() as conn:
            return self._job(conn, job_id)

    def list_jobs(
        self, *, user: str | None = None, state: State | str | None = None, limit: int = 50
    ) -> list[Job]:
        """Jobs, newest first, optionally only one user's and/or one state's."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit!r}")
        where, params = ["1"], []
        if user is not None:
            where.append("user = ?")
            params.append(user)
        if state is not None:
            where.append("state = ?")
            params.append(State(state).value)
        sql = f"{_SELECT_JOB} WHERE {' AND '.join(where)} ORDER BY created_at DESC, rowid DESC"
        with self._read() as conn:
            return self._jobs(conn, f"{sql} LIMIT ?", [*params, limit])

    def position(self, job_id: str) -> int | None:
        """1-based place of a queued job in the fair order (1 = next); None if not queued."""
        with self._read() as conn:  # counts the queued jobs ahead of it in _FAIR_ORDER
            place = conn.execute(
                "SELECT COUNT(ahead.id) + 1 FROM jobs AS job LEFT JOIN jobs AS ahead"
                " ON ahead.state = 'queued' AND (ahead.priority, ahead.turn, ahead.created_at,"
                " ahead.rowid) < (job.priority, job.turn, job.created_at, job.rowid)"
                " WHERE job.id = ? AND job.state = 'queued' GROUP BY job.id",
                (job_id,),
            ).fetchone()
        return None if place is None else place[0]

    def get_many(self, job_ids: list[str]) -> list[Job]:
        """The jobs with these ids that exist, in one query (event streams read them together)."""
        with self._read() as conn:
            return self._jobs(
                conn,
                f"{_SELECT_JOB} WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(job_ids),),
            )

    def positions(self) -> dict[str, int]:
        """The 1-based place of every queued job in the fair order, in one query."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT id FROM jobs WHERE state = 'queued' ORDER BY {_FAIR_ORDER}"
            ).fetchall()
        return {job_id: place for place, (job_id,) in enumerate(rows, 1)}

    def depth(self) -> int:
        """Number of queued jobs."""
        with self._read() as conn:
            return self._depth(conn)

    def _depth(self, conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued'").fetchone()[0]

    def _next_turn(self, conn: sqlite3.Connection, user: str, priority: Priority) -> int:
        """The new job's round: the round being served, or the user's next one if later."""
        serving, users_next = conn.execute(
            "SELECT COALESCE("
            " (SELECT MIN(turn) FROM jobs WHERE priority = :p AND state = 'queued'),"
            " (SELECT MAX(turn) FROM jobs WHERE priority = :p AND state = 'running'), 0),"
            " (SELECT MAX(turn) + 1 FROM jobs"
            "  WHERE priority = :p AND user = :u AND state IN ('queued', 'running'))",
            {"p": int(priority), "u": user},
        ).fetchone()
        return serving if users_next is None else max(serving, users_next)

    def _retry_after_s(self, conn: sqlite3.Connection, depth: int) -> int:
        """Seconds until the queue has room (`retry_after_estimate`), from the jobs that left
        the queue over the last THROUGHPUT_WINDOW_S."""
        now = self.now()
        finished, first_start = conn.execute(
            "SELECT COUNT(*), MIN(COALESCE(started_at, created_at)) FROM jobs"
            " WHERE finished_at >= ? AND state != 'queued'",
            (now - THROUGHPUT_WINDOW_S,),
        ).fetchone()
        return retry_after_estimate(depth, finished, first_start, now, self.workers)

    # -- metrics -----------------------------------------------------------------------------

    def counts(self) -> dict[State, int]:
        """Number of jobs in each state, every state present."""
        counts = dict.fromkeys(State, 0)
        with self._read() as conn:
            for state, count in conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
                counts[State(state)] = count
        return counts

    def pool_stats(self) -> list[PoolStats]:
        """The one pool of this file (every worker is on this host)."""
        counts = self.counts()
        with self._read() as conn:
            totals = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        done = {name[5:]: n for name, n in totals.items() if name.startswith("done:")}
        return [
            PoolStats(
                self.pool,
                counts[State.QUEUED],
                counts[State.RUNNING],
                totals.get("reclaimed", 0),
                totals.get("dead_lettered", 0),
                done,
            )
        ]

    def finished_since(self, since: float) -> list[Job]:
        """Jobs finished at or after `since`, oldest first (their wait_s/run_s feed metrics)."""
        with self._read() as conn:
            return self._jobs(
                conn, f"{_SELECT_JOB} WHERE finished_at >= ? ORDER BY finished_at, rowid", (since,)
            )

    # -- worker side -------------------------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        lease_s: float,
        max_batch: int = 1,
        kinds: tuple[str, ...] | None = None,
    ) -> list[Job]:
        """Lease the next job in fair order to `worker_id`, plus batch partners; [] when idle.

        Partners are up to `max_batch - 1` more queued jobs of the same kind with the same
        non-null batch key, taken in fair order. Each claimed job gets `attempts + 1`, state
        running and a lease until now + `lease_s`. Expired leases are put back first, so a
        dead worker's job never waits for a sweeper. `kinds`: only jobs of these kinds (a
        training worker renders waiting posters between steps, not another training).
        """
        check_claim(lease_s, max_batch)
        with self._write() as conn:
            self._requeue_expired(conn, self.now())
            only = "" if kinds is None else f" AND kind IN ({', '.join('?' * len(kinds))})"
            head = conn.execute(
                f"SELECT id, kind, batch_key FROM jobs WHERE state = 'queued'{only}"
                f" ORDER BY {_FAIR_ORDER} LIMIT 1",
                kinds or (),
            ).fetchone()
            if head is None:
                return []
            head_id, kind, batch_key = head
            ids = [head_id]
            if batch_key is not None and max_batch > 1:
                partners = conn.execute(
                    "SELECT id FROM jobs WHERE state = 'queued' AND kind = ? AND batch_key = ?"
                    f" AND id != ? ORDER BY {_FAIR_ORDER} LIMIT ?",
                    (kind, batch_key, head_id, max_batch - 1),
                )
                ids += [row[0] for row in partners]
            now = self.now()
            marks = ", ".join("?" * len(ids))
            claimed = self._jobs(
                conn,
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?,"
                " lease_owner = ?, lease_expires_at = ?, progress = NULL"
                f" WHERE id IN ({marks}) RETURNING {', '.join(_COLUMNS)}",
                (now, worker_id, now + lease_s, *ids),
            )
        return sorted(claimed, key=lambda job: ids.index(job.id))

    def heartbeat(self, worker_id: str, job_ids: list[str], lease_s: float) -> list[str]:
        """Extend the leases `worker_id` still holds; returns those ids (a missing one was lost)."""
        if not job_ids:
            return []
        marks = ", ".join("?" * len(job_ids))
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE jobs SET lease_expires_at = ? WHERE state = 'running'"
                f" AND lease_owner = ? AND id IN ({marks}) RETURNING id",
                (self.now() + lease_s, worker_id, *job_ids),
            ).fetchall()
        return [row[0] for row in rows]

    def set_progress(self, job_id: str, step: int, total: int, stage: str, **details: Any) -> None:
        """Record a running job's progress: one small UPDATE, so throttle calls (e.g. 2 per s).

        `details`: more JSON fields for this kind of job (training: epoch, loss, eta_s ...)."""
        progress = json.dumps({"step": step, "total": total, "stage": stage, **details})
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND state = 'running'",
                (progress, job_id),
            )

    def is_cancel_requested(self, job_id: str) -> bool:
        """True once `cancel` was called on the job (check it between denoising steps)."""
        with self._read() as conn:
            row = conn.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
            flag = row.fetchone()
        if flag is None:
            raise JobNotFound(job_id)
        return bool(flag[0])

    def complete(
        self,
        job_id: str,
        outputs: list[str],
        info: dict[str, Any] | None = None,
        *,
        worker_id: str | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Job:
        """running → done with its output paths and result info.

        With `worker_id`, raises `LeaseLost` if another worker holds the job now, so a worker
        that overran its lease cannot record a second set of outputs.
        """
        _on_this_host(files)
        return self._end(
            job_id,
            worker_id,
            State.DONE,
            outputs=json.dumps(outputs),
            info=None if info is None else json.dumps(info),
        )

    def mark_cancelled(
        self,
        job_id: str,
        *,
        worker_id: str | None = None,
        outputs: list[str] | None = None,
        info: dict[str, Any] | None = None,
        files: dict[str, bytes] | None = None,
    ) -> Job:
        """running → cancelled: the worker stopped the job after `cancel` asked it to, keeping
        what it made before stopping (a cancelled training keeps its saved epochs)."""
        _on_this_host(files)
        kept = {} if outputs is None else {"outputs": json.dumps(outputs)}
        if info is not None:
            kept["info"] = json.dumps(info)
        return self._end(job_id, worker_id, State.CANCELLED, **kept)

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
        """End a running attempt with `error` (English) and its stable `code` and `values`.

        retry=False → failed. retry=True → queued again (the attempt stays spent), or dead
        when `attempts` has reached `max_attempts`; the error is kept either way.
        """
        values_json = json.dumps(values or {})
        if not retry:
            return self._end(
                job_id,
                worker_id,
                State.FAILED,
                error=error,
                error_code=code,
                error_values=values_json,
            )
        with self._write(wake=True) as conn:
            job = self._running(conn, job_id, worker_id)
            return self._give_back(conn, job, job.attempts, (error, code, values_json), self.now())

    def release(self, job_id: str, *, worker_id: str | None = None) -> Job:
        """running → queued without spending an attempt (a worker shutting down on SIGTERM)."""
        with self._write(wake=True) as conn:
            job = self._running(conn, job_id, worker_id)
            kept = (job.error, job.error_code, json.dumps(job.error_values))
            return self._give_back(conn, job, job.attempts - 1, kept, self.now())

    def requeue_expired(self, now: float | None = None) -> list[Job]:
        """Put running jobs whose lease ended before `now` back: queued, or dead when out of
        attempts, or cancelled when cancel was requested. Returns them in their new state."""
        with self._write(wake=True) as conn:
            return self._requeue_expired(conn, self.now() if now is None else now)

    def _requeue_expired(self, conn: sqlite3.Connection, now: float) -> list[Job]:
        expired = self._jobs(
            conn, f"{_SELECT_JOB} WHERE state = 'running' AND lease_expires_at < ?", (now,)
        )
        if expired:
            self._count(conn, "reclaimed", len(expired))
        return [
            self._give_back(
                conn,
                job,
                job.attempts,
                (
                    f"lease expired: worker {job.lease_owner} stopped renewing it",
                    "worker_died",
                    "{}",
                ),
                now,
            )
            for job in expired
        ]

    def _give_back(
        self,
        conn: sqlite3.Connection,
        job: Job,
        attempts: int,
        error: tuple[str | None, str | None, str],
        now: float,
    ) -> Job:
        """Clear a running job's lease: cancelled if asked, dead if out of attempts, else queued.
        `error`: the message, its code and its values (JSON) to keep."""
        message, code, values = error
        if job.cancel_requested:
            state = State.CANCELLED
        elif attempts >= job.max_attempts:
            state = State.DEAD
            message = f"{message} (attempt {attempts} of {job.max_attempts}, none left)"
            self._count(conn, "dead_lettered")
        else:
            state = State.QUEUED
        finished_at = None if state == State.QUEUED else now
        started_at = None if state == State.QUEUED else job.started_at
        # a job back in the queue has made no progress yet (followers would show a stale step)
        keep = state != State.QUEUED and job.progress is not None
        progress = json.dumps(job.progress) if keep else None
        return self._jobs(
            conn,
            "UPDATE jobs SET state = ?, attempts = ?, error = ?, error_code = ?, error_values = ?,"
            " finished_at = ?, started_at = ?, progress = ?, lease_owner = NULL,"
            f" lease_expires_at = NULL WHERE id = ? RETURNING {', '.join(_COLUMNS)}",
            (
                state.value,
                attempts,
                message,
                code,
                values,
                finished_at,
                started_at,
                progress,
                job.id,
            ),
        )[0]

    def _running(self, conn: sqlite3.Connection, job_id: str, worker_id: str | None) -> Job:
        """The job, which must be running (under `worker_id` when given)."""
        job = self._job(conn, job_id)
        if job.state != State.RUNNING:
            raise JobStateError(f"job {job_id} is {job.state.value}, not running")
        if worker_id is not None and job.lease_owner != worker_id:
            raise LeaseLost(f"job {job_id} is leased to {job.lease_owner}, not {worker_id}")
        return job

    def _end(self, job_id: str, worker_id: str | None, state: State, **columns: Any) -> Job:
        """Move a running job to the finished `state`, setting `columns`, clearing its lease."""
        assignments = "".join(f", {name} = ?" for name in columns)
        with self._write() as conn:
            job = self._running(conn, job_id, worker_id)
            if state == State.DONE:
                self._count(conn, f"done:{job.lease_owner}")
            return self._jobs(
                conn,
                f"UPDATE jobs SET state = ?{assignments}, finished_at = ?, lease_owner = NULL,"
                f" lease_expires_at = NULL WHERE id = ? RETURNING {', '.join(_COLUMNS)}",
                (state.value, *columns.values(), self.now(), job_id),
            )[0]

    # -- cancelling --------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        """Cancel a job: queued → cancelled now; running → cancel_requested, and the worker
        stops between denoising steps and calls `mark_cancelled`; finished → unchanged."""
        with self._write() as conn:
            job = self._job(conn, job_id)
            if job.state == State.QUEUED:
                conn.execute(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?"
                    " WHERE id = ?",
                    (self.now(), job_id),
                )
            elif job.state == State.RUNNING:
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return self._job(conn, job_id)

    # -- operations --------------------------------------------------------------------------

    def dead_letters(self, limit: int = 100) -> list[Job]:
        """Dead jobs, newest first: in this backend the dead-letter list is the dead state."""
        return self.list_jobs(state=State.DEAD, limit=limit)

    def announce(self, worker_id: str, capabilities: dict[str, Any]) -> None:
        """Nothing to route: this file's workers are the service's own, on its host."""
        return None

    def workers_announced(self) -> list[dict[str, Any]]:
        return []  # the service's supervisor knows its workers (/healthz)

    def requeue_dead(self, job_id: str) -> Job:
        """dead → queued with no attempts spent, its last error kept until it runs again."""
        with self._write(wake=True) as conn:
            job = self._job(conn, job_id)
            if job.state != State.DEAD:
                raise JobStateError(f"job {job_id} is {job.state.value}, not dead")
            return self._jobs(
                conn,
                "UPDATE jobs SET state = 'queued', attempts = 0, finished_at = NULL,"
                f" started_at = NULL, progress = NULL WHERE id = ? RETURNING {', '.join(_COLUMNS)}",
                (job_id,),
            )[0]


def _on_this_host(files: dict[str, bytes] | None) -> None:
    if files:
        raise ValueError("files: the SQLite queue's workers write outputs on the service's disk")


def queue_path(config: Config) -> Path:
    """The file `[queue] url` names (sqlite:///PATH), else engine.db in the data folder."""
    if config.queue.url.startswith("sqlite:///"):
        return Path(config.queue.url.removeprefix("sqlite:///"))
    return config.data_dir / QUEUE_FILE


def open_queue(config: Config, workers: int = 1) -> JobQueue:
    """The SQLite job queue of this configuration, with the [engine] limits."""
    path = queue_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JobQueue(
        path,
        max_queue=config.engine.max_queue,
        max_attempts=config.engine.max_attempts,
        workers=workers,
        pool=config.queue.pool,
    )
