"""The durable job queue, every test against both backends: a real SQLite file and a real
valkey-server; real processes where concurrency or crashes matter."""

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.service.queue_base import JobQueueBase
from engine.service.queue_common import (
    JobNotFound,
    JobStateError,
    LeaseLost,
    Priority,
    QueueFull,
    State,
)
from engine.service.queue_redis import RedisQueue
from engine.service.queue_sqlite import JobQueue

LEASE_S = 60.0  # leases that do not run out during a test
CLAIMERS = 8  # the concurrency test: 8 processes on one queue
CONCURRENT_JOBS = 200
# Valkey measures a lease on its own clock, so leases that must run out are short and real.
REAL_LEASE_S = 1.0


class Clock:
    """A clock the test moves by hand, so leases expire without sleeping."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Backend:
    """One queue store (`spec`: a file path or a redis:// URL) and how time passes for it."""

    name: str
    spec: str
    clock: Clock

    @property
    def lease_s(self) -> float:
        """A lease the test lets run out: SQLite's runs on the test's clock."""
        return LEASE_S if self.name == "sqlite" else REAL_LEASE_S

    def open(self, **kwargs: Any) -> JobQueueBase:
        return open_spec(self.spec, **kwargs)

    def lapse(self, seconds: float) -> None:
        """Let `seconds` pass: on the test's clock, and for Valkey's leases really."""
        self.clock.advance(seconds)
        if self.name == "redis":
            time.sleep(seconds)


def open_spec(spec: str, **kwargs: Any) -> JobQueueBase:
    if spec.startswith("redis://"):
        return RedisQueue(spec, lease_s=REAL_LEASE_S, **kwargs)
    return JobQueue(spec, **kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", str(tmp_path / "engine.db"), clock)
    return Backend("redis", request.getfixturevalue("valkey_url"), clock)


@pytest.fixture
def queue(backend: Backend, clock: Clock) -> Iterator[JobQueueBase]:
    with backend.open(now=clock) as q:
        yield q


def submit_many(queue: JobQueueBase, user: str, count: int, **kwargs) -> list[str]:
    """Submit `count` jobs one clock tick apart; returns their ids."""
    ids = []
    for i in range(count):
        ids.append(queue.submit("txt2img", {"i": i}, user, **kwargs).id)
        if isinstance(queue.now, Clock):
            queue.now.advance(1)
    return ids


def drain(queue: JobQueueBase) -> list[str]:
    """Claim and complete jobs one by one until the queue is empty; returns the claim order."""
    order = []
    while jobs := queue.claim("w", LEASE_S):
        queue.complete(jobs[0].id, [])
        order.append(jobs[0].id)
    return order


# -- submitting -----------------------------------------------------------------------------


def test_submit_stores_the_job_durably(backend: Backend, clock: Clock) -> None:
    with backend.open(now=clock) as q:
        job = q.submit("txt2img", {"prompt": "rider in snow"}, "alice", batch_key="k")
    with backend.open() as reopened:
        stored = reopened.get(job.id)
    assert stored == job
    assert (stored.state, stored.attempts, stored.max_attempts) == (State.QUEUED, 0, 3)
    assert (stored.params, stored.user, stored.priority) == (
        {"prompt": "rider in snow"},
        "alice",
        Priority.USER,
    )
    assert stored.created_at == clock.t
    assert stored.outputs == [] and stored.progress is None and not stored.cancel_requested


def test_submit_rejects_bad_arguments_by_name(queue: JobQueueBase) -> None:
    with pytest.raises(ValueError, match="kind"):
        queue.submit("", {}, "alice")
    with pytest.raises(ValueError, match="user"):
        queue.submit("txt2img", {}, "")
    with pytest.raises(ValueError, match="priority"):
        queue.submit("txt2img", {}, "alice", priority=7)
    with pytest.raises(ValueError, match="max_attempts"):
        queue.submit("txt2img", {}, "alice", max_attempts=0)
    assert queue.depth() == 0


def test_idempotency_key_makes_a_resubmit_a_no_op(queue: JobQueueBase) -> None:
    first = queue.submit("txt2img", {"a": 1}, "alice", idempotency_key="update-42")
    again = queue.submit("txt2img", {"a": 1}, "alice", idempotency_key="update-42")
    other = queue.submit("txt2img", {"a": 1}, "alice", idempotency_key="update-43")
    assert again == first
    assert other.id != first.id
    assert queue.depth() == 2


def test_full_queue_refuses_with_retry_after(backend: Backend, clock: Clock) -> None:
    with backend.open(max_queue=3, workers=2, now=clock) as q:
        submit_many(q, "alice", 3)
        with pytest.raises(QueueFull) as refused:
            q.submit("txt2img", {}, "bob")
        assert refused.value.depth == 3
        assert refused.value.retry_after_s == 15  # no history: 10 s guess × 3 queued / 2 workers
        assert "try again in 15 s" in str(refused.value)

        # with history the estimate follows measured throughput: one job finished in 4 s
        [job] = q.claim("w", LEASE_S)
        clock.advance(4)
        q.complete(job.id, [])
        q.submit("txt2img", {}, "bob")
        with pytest.raises(QueueFull) as refused:
            q.submit("txt2img", {}, "carol")
        assert refused.value.retry_after_s == 12  # 3 queued at one job per 4 s
        assert q.depth() == 3


def test_full_queue_still_returns_an_existing_idempotent_job(backend: Backend) -> None:
    with backend.open(max_queue=1) as q:
        job = q.submit("txt2img", {}, "alice", idempotency_key="update-1")
        assert q.submit("txt2img", {}, "alice", idempotency_key="update-1") == job


# -- fair order -----------------------------------------------------------------------------


def test_round_robin_between_users_inside_a_class(queue: JobQueueBase) -> None:
    greedy = submit_many(queue, "alice", 20)
    modest = submit_many(queue, "bob", 2)
    order = drain(queue)
    assert order[:4] == [greedy[0], modest[0], greedy[1], modest[1]]
    assert order[4:] == greedy[2:]


def test_a_latecomer_joins_the_round_being_served(queue: JobQueueBase) -> None:
    alice = submit_many(queue, "alice", 6)
    for _ in range(3):
        queue.claim("w", LEASE_S)
    [bob] = submit_many(queue, "bob", 1)
    assert queue.position(bob) == 2  # behind alice's 4th job, ahead of her 5th and 6th
    assert drain(queue)[:2] == [alice[3], bob]


def test_a_requeued_job_keeps_its_place(queue: JobQueueBase) -> None:
    first, second = submit_many(queue, "alice", 2)
    queue.claim("w", LEASE_S)
    queue.release(first)
    assert [queue.position(first), queue.position(second)] == [1, 2]


def test_priority_classes_run_admin_then_users_then_training(queue: JobQueueBase) -> None:
    training = submit_many(queue, "ops", 2, priority=Priority.TRAINING)
    posters = submit_many(queue, "alice", 2, priority=Priority.USER)
    admin = submit_many(queue, "admin", 1, priority=Priority.ADMIN)
    assert drain(queue) == admin + posters + training


def test_position_follows_the_claim_order(queue: JobQueueBase) -> None:
    alice = submit_many(queue, "alice", 3)
    bob = submit_many(queue, "bob", 1)
    admin = submit_many(queue, "admin", 1, priority=Priority.ADMIN)
    positions = {job_id: queue.position(job_id) for job_id in alice + bob + admin}
    assert positions == {admin[0]: 1, alice[0]: 2, bob[0]: 3, alice[1]: 4, alice[2]: 5}

    [claimed] = queue.claim("w", LEASE_S)
    assert claimed.id == admin[0]
    assert queue.position(admin[0]) is None  # running jobs have no place in the queue
    assert [queue.position(job_id) for job_id in alice] == [1, 3, 4]
    assert queue.position(bob[0]) == 2


# -- batching -------------------------------------------------------------------------------


def test_batch_claim_groups_only_identical_batch_keys(queue: JobQueueBase) -> None:
    first = submit_many(queue, "alice", 1, batch_key="sd15-512-euler")
    submit_many(queue, "bob", 1, batch_key="sdxl-1024")
    submit_many(queue, "carol", 1)  # no batch key: never batched
    same = submit_many(queue, "dave", 4, batch_key="sd15-512-euler")

    batch = queue.claim("w", LEASE_S, max_batch=4)
    assert [job.id for job in batch] == first + same[:3]
    assert {job.state for job in batch} == {State.RUNNING}
    assert {job.lease_owner for job in batch} == {"w"}

    [sdxl] = queue.claim("w", LEASE_S, max_batch=4)
    assert sdxl.batch_key == "sdxl-1024"
    [unbatched] = queue.claim("w", LEASE_S, max_batch=4)
    assert unbatched.batch_key is None
    assert [job.id for job in queue.claim("w", LEASE_S, max_batch=4)] == same[3:]
    assert queue.claim("w", LEASE_S, max_batch=4) == []


def test_batch_partners_must_share_the_kind(queue: JobQueueBase) -> None:
    txt2img = queue.submit("txt2img", {}, "alice", batch_key="k")
    queue.submit("train", {}, "alice", batch_key="k")
    assert [job.id for job in queue.claim("w", LEASE_S, max_batch=4)] == [txt2img.id]


# -- running, progress, results ---------------------------------------------------------------


def test_claim_complete_records_times_outputs_and_info(queue: JobQueueBase, clock: Clock) -> None:
    job = queue.submit("txt2img", {}, "alice")
    clock.advance(3)
    [running] = queue.claim("worker-0", LEASE_S)
    assert (running.state, running.attempts, running.lease_owner) == (State.RUNNING, 1, "worker-0")
    assert running.lease_expires_at == clock.t + LEASE_S

    queue.set_progress(job.id, step=5, total=20, stage="denoise")
    assert queue.get(job.id).progress == {"step": 5, "total": 20, "stage": "denoise"}

    clock.advance(7)
    done = queue.complete(job.id, ["outputs/2024-01-01/a.png"], {"seeds": [1]})
    assert (done.state, done.outputs, done.info) == (
        State.DONE,
        ["outputs/2024-01-01/a.png"],
        {"seeds": [1]},
    )
    assert (done.wait_s, done.run_s, done.lease_owner) == (3, 7, None)
    assert done.finished and queue.finished_since(clock.t) == [done]


def test_finishing_a_job_that_is_not_running_is_refused(queue: JobQueueBase) -> None:
    job = queue.submit("txt2img", {}, "alice")
    with pytest.raises(JobStateError, match="queued"):
        queue.complete(job.id, [])
    with pytest.raises(JobNotFound):
        queue.get("nope")


def test_a_worker_that_lost_its_lease_cannot_complete(
    queue: JobQueueBase, backend: Backend
) -> None:
    job = queue.submit("txt2img", {}, "alice")
    queue.claim("slow-worker", backend.lease_s)
    backend.lapse(backend.lease_s * 1.2)
    queue.claim("other-worker", backend.lease_s)  # a pool's workers share one lease length
    assert queue.heartbeat("slow-worker", [job.id], backend.lease_s) == []
    with pytest.raises(LeaseLost):
        queue.complete(job.id, ["dup.png"], worker_id="slow-worker")
    assert queue.complete(job.id, ["a.png"], worker_id="other-worker").attempts == 2


def test_heartbeat_extends_the_lease(queue: JobQueueBase, backend: Backend) -> None:
    job = queue.submit("txt2img", {}, "alice")
    queue.claim("w", backend.lease_s)
    for _ in range(3):  # 1.5 leases in all, never half a lease without a heartbeat
        backend.lapse(backend.lease_s * 0.5)
        assert queue.heartbeat("w", [job.id], backend.lease_s) == [job.id]
        assert queue.requeue_expired() == []
    assert queue.get(job.id).state == State.RUNNING


# -- retries, leases, death ---------------------------------------------------------------------


def test_expired_lease_requeues_with_the_attempt_spent(
    queue: JobQueueBase, backend: Backend
) -> None:
    job = queue.submit("txt2img", {}, "alice")
    queue.claim("w", backend.lease_s)
    backend.lapse(backend.lease_s * 0.5)
    assert queue.requeue_expired() == []
    backend.lapse(backend.lease_s * 0.7)
    [requeued] = queue.requeue_expired()
    assert (requeued.id, requeued.state, requeued.attempts) == (job.id, State.QUEUED, 1)
    assert requeued.lease_owner is None and "lease expired" in requeued.error


def test_expired_leases_are_swept_by_claim(queue: JobQueueBase, backend: Backend) -> None:
    job = queue.submit("txt2img", {}, "alice")
    queue.claim("w1", backend.lease_s)
    backend.lapse(backend.lease_s * 1.2)
    [again] = queue.claim("w2", backend.lease_s)
    assert (again.id, again.attempts, again.lease_owner) == (job.id, 2, "w2")


def test_expired_leases_end_dead_after_max_attempts(
    queue: JobQueueBase, backend: Backend, clock: Clock
) -> None:
    job = queue.submit("txt2img", {}, "alice", max_attempts=2)
    for _ in range(2):
        queue.claim("w", backend.lease_s)
        backend.lapse(backend.lease_s * 1.2)
        queue.requeue_expired()
    dead = queue.get(job.id)
    assert (dead.state, dead.attempts, dead.finished_at) == (State.DEAD, 2, clock.t)
    assert "lease expired" in dead.error and "attempt 2 of 2" in dead.error
    assert queue.claim("w", LEASE_S) == []


def test_retryable_failure_requeues_then_dies_with_the_reason(queue: JobQueueBase) -> None:
    job = queue.submit("txt2img", {}, "alice", max_attempts=2)
    queue.claim("w", LEASE_S)
    retried = queue.fail(job.id, "CUDA out of memory", retry=True)
    assert (retried.state, retried.attempts, retried.error) == (
        State.QUEUED,
        1,
        "CUDA out of memory",
    )
    queue.claim("w", LEASE_S)
    dead = queue.fail(job.id, "CUDA out of memory", retry=True)
    assert (dead.state, dead.attempts) == (State.DEAD, 2)
    assert dead.error.startswith("CUDA out of memory")


def test_final_failure_is_not_retried(queue: JobQueueBase) -> None:
    job = queue.submit("txt2img", {}, "alice")
    queue.claim("w", LEASE_S)
    failed = queue.fail(job.id, "unknown LoRA 'rider_v9'", retry=False)
    assert (failed.state, failed.error, failed.attempts) == (
        State.FAILED,
        "unknown LoRA 'rider_v9'",
        1,
    )
    assert queue.depth() == 0


def test_release_does_not_spend_an_attempt(queue: JobQueueBase) -> None:
    job = queue.submit("txt2img", {}, "alice", max_attempts=1)
    for _ in range(3):  # more releases than max_attempts: none of them count
        queue.claim("w", LEASE_S)
        released = queue.release(job.id, worker_id="w")
        assert (released.state, released.attempts, released.lease_owner) == (
            State.QUEUED,
            0,
            None,
        )
    [job] = queue.claim("w", LEASE_S)
    assert queue.complete(job.id, []).attempts == 1


# -- cancelling ---------------------------------------------------------------------------------


def test_cancel_queued_job_is_immediate(queue: JobQueueBase) -> None:
    job = queue.submit("txt2img", {}, "alice")
    cancelled = queue.cancel(job.id)
    assert cancelled.state == State.CANCELLED and cancelled.finished_at is not None
    assert queue.claim("w", LEASE_S) == []
    assert queue.position(job.id) is None


def test_cancel_running_job_asks_the_worker(queue: JobQueueBase) -> None:
    job = queue.submit("txt2img", {}, "alice")
    queue.claim("w", LEASE_S)
    assert not queue.is_cancel_requested(job.id)
    requested = queue.cancel(job.id)
    assert requested.state == State.RUNNING and requested.cancel_requested
    assert queue.is_cancel_requested(job.id)
    assert queue.mark_cancelled(job.id, worker_id="w").state == State.CANCELLED
    assert queue.cancel(job.id).state == State.CANCELLED  # cancelling again changes nothing


def test_cancel_requested_job_of_a_dead_worker_ends_cancelled(
    queue: JobQueueBase, backend: Backend
) -> None:
    job = queue.submit("txt2img", {}, "alice")
    queue.claim("w", backend.lease_s)
    queue.cancel(job.id)
    backend.lapse(backend.lease_s * 1.2)
    assert [j.state for j in queue.requeue_expired()] == [State.CANCELLED]


# -- listing and metrics ------------------------------------------------------------------------


def test_list_jobs_filters_by_user_and_state(queue: JobQueueBase) -> None:
    alice = submit_many(queue, "alice", 3)
    submit_many(queue, "bob", 1)
    queue.cancel(alice[0])
    assert [job.id for job in queue.list_jobs(user="alice")] == alice[::-1]
    assert [job.id for job in queue.list_jobs(user="alice", state="queued")] == alice[:0:-1]
    assert len(queue.list_jobs(limit=2)) == 2


def test_counts_cover_every_state(queue: JobQueueBase) -> None:
    ids = submit_many(queue, "alice", 3)
    queue.cancel(ids[0])
    queue.claim("w", LEASE_S)
    assert queue.counts() == {
        State.QUEUED: 1,
        State.RUNNING: 1,
        State.DONE: 0,
        State.FAILED: 0,
        State.CANCELLED: 1,
        State.DEAD: 0,
    }
    assert queue.depth() == 1


# -- real processes -----------------------------------------------------------------------------


def claim_until_empty(spec: str, worker_id: str, start: Any, results: Any) -> None:
    """Child process: claim and complete until the queue is empty; report what it claimed."""
    with open_spec(spec) as q:
        start.wait()
        claimed = []
        while jobs := q.claim(worker_id, LEASE_S):
            claimed.append(jobs[0].id)
            q.complete(jobs[0].id, [f"{worker_id}.png"], worker_id=worker_id)
        results.put((worker_id, claimed))


def test_concurrent_claimers_never_claim_a_job_twice(backend: Backend) -> None:
    with backend.open(max_queue=CONCURRENT_JOBS) as q:
        submitted = set(submit_many(q, "alice", CONCURRENT_JOBS // 2))
        submitted |= set(submit_many(q, "bob", CONCURRENT_JOBS // 2))

    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    workers = [
        ctx.Process(target=claim_until_empty, args=(backend.spec, f"w{i}", start, results))
        for i in range(CLAIMERS)
    ]
    for worker in workers:
        worker.start()
    start.set()
    reports = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0] * CLAIMERS  # no BUSY error escaped

    claimed = [job_id for _, ids in reports for job_id in ids]
    assert len(claimed) == len(set(claimed)) == CONCURRENT_JOBS
    assert set(claimed) == submitted
    with backend.open() as q:
        jobs = [q.get(job_id) for job_id in submitted]
    assert {(job.state, job.attempts) for job in jobs} == {(State.DONE, 1)}
    claimer = {job_id: worker_id for worker_id, ids in reports for job_id in ids}
    assert all(job.outputs == [f"{claimer[job.id]}.png"] for job in jobs)


def claim_and_hang(spec: str, lease_s: float, claimed: Any) -> None:
    """Child process: claim one job, report it, then hang until killed."""
    with open_spec(spec) as q:
        [job] = q.claim("doomed-worker", lease_s)
        claimed.put(job.id)
        signal.pause()


def test_killed_worker_leaves_its_job_recoverable(backend: Backend, clock: Clock) -> None:
    with backend.open() as q:
        job = q.submit("txt2img", {"prompt": "rider"}, "alice")

    ctx = multiprocessing.get_context("spawn")
    claimed = ctx.Queue()
    child = ctx.Process(target=claim_and_hang, args=(backend.spec, backend.lease_s, claimed))
    child.start()
    assert claimed.get(timeout=30) == job.id
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=10)
    assert child.exitcode == -signal.SIGKILL

    with backend.open(now=clock) as q:
        held = q.get(job.id)
        assert (held.state, held.lease_owner) == (State.RUNNING, "doomed-worker")
        clock.t = held.started_at
        backend.lapse(backend.lease_s * 1.2)  # the lease runs out
        [again] = q.claim("new-worker", backend.lease_s)
        done = q.complete(again.id, ["a.png"], worker_id="new-worker")
    assert (done.id, done.state, done.attempts, done.outputs) == (
        job.id,
        State.DONE,
        2,
        ["a.png"],
    )
    if backend.name == "sqlite":  # the file is intact after the kill
        with sqlite3.connect(backend.spec) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def submit_one(spec: str) -> None:
    """Child process: one submit, as a worker process or another host changes the queue."""
    with open_spec(spec) as q:
        q.submit("txt2img", {}, "alice")


def test_a_change_in_another_process_wakes_the_event_reader(backend: Backend) -> None:
    """The service's event watcher waits on the queue: a change made by another process (a
    worker) ends the wait, for the SQLite file as for Valkey."""
    with backend.open() as reader:
        reader.wait_for_changes(0.01)  # listening from here on
        woke = threading.Event()
        waiting = threading.Thread(
            target=lambda: (reader.wait_for_changes(60), woke.set()), daemon=True
        )
        waiting.start()
        writer = multiprocessing.get_context("spawn").Process(
            target=submit_one, args=(backend.spec,)
        )
        writer.start()
        writer.join(30)
        waiting.join(20)
        assert woke.is_set()
        assert reader.depth() == 1


def test_a_submit_wakes_every_idle_worker(backend: Backend) -> None:
    """Idle workers wait on the queue between claims: a job submitted by another process ends
    every worker's wait at once (not at its next look), and the job can then be claimed."""
    workers = [backend.open(), backend.open()]
    try:
        for worker in workers:
            worker.wait_for_work(0.01)  # listening from here on
        woke = [threading.Event() for _ in workers]
        waits = [
            threading.Thread(target=lambda w=w, e=e: (w.wait_for_work(60), e.set()), daemon=True)
            for w, e in zip(workers, woke, strict=True)
        ]
        for wait in waits:
            wait.start()
        writer = multiprocessing.get_context("spawn").Process(
            target=submit_one, args=(backend.spec,)
        )
        writer.start()
        writer.join(30)
        for wait in waits:
            wait.join(20)
        assert all(event.is_set() for event in woke)
        assert [job.kind for job in workers[0].claim("w0", 30.0)] == ["txt2img"]
    finally:
        for worker in workers:
            worker.close()
