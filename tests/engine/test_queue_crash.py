"""Crashes on the Valkey queue with real processes and real signals: worker processes with their
own data folders (two hosts), `kill -9` mid-job, a Valkey server killed and restarted from its
AOF, a worker frozen past its lease. Each worker appends the jobs it recorded to its own log, so
a job recorded twice or lost shows up however the run interleaved."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.service.queue_common import JobStateError, State
from engine.service.queue_redis import RedisQueue
from tests.valkey import ValkeyServer

LEASE_S = 1.0
RENDER_S = (0.2, 0.5)  # a "render": long enough to be killed in the middle of
WAIT_S = 60.0


def worker_process(url: str, worker_id: str, data_dir: str, seed: int) -> None:
    """Child: claim, render (sleep), write the PNG under its own data folder, record it; keep
    the lease with a heartbeat thread; ride out a Valkey outage. Appends recorded ids to
    <data_dir>/recorded.log and lost leases to lost.log."""
    rng = random.Random(seed)
    queue = RedisQueue(url, lease_s=LEASE_S)
    folder = Path(data_dir)
    held: list[str] = []

    def heartbeat() -> None:
        while True:
            time.sleep(LEASE_S / 3)
            with contextlib.suppress(redis.ConnectionError):
                queue.heartbeat(worker_id, list(held), LEASE_S)

    threading.Thread(target=heartbeat, daemon=True).start()
    while True:
        try:
            jobs = queue.claim(worker_id, LEASE_S)
        except redis.ConnectionError:
            time.sleep(0.1)
            continue
        if not jobs:
            time.sleep(0.05)
            continue
        [job] = jobs
        held[:] = [job.id]
        time.sleep(rng.uniform(*RENDER_S))
        png = folder / f"{job.id}.png"
        png.write_bytes(json.dumps(job.params).encode())
        while True:
            try:
                queue.complete(job.id, [png.name], {"host": data_dir}, worker_id=worker_id)
                log = "recorded.log"
                break
            except JobStateError:  # LeaseLost, or already done by the worker that took it over
                png.unlink()  # this one keeps no files
                log = "lost.log"
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        held[:] = []
        with (folder / log).open("a") as lines:
            lines.write(job.id + "\n")


def start_worker(url: str, worker_id: str, data_dir: Path) -> Any:
    data_dir.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    process = ctx.Process(
        target=worker_process, args=(url, worker_id, str(data_dir), random.randrange(2**31))
    )
    process.start()
    return process


def wait_until_done(queue: RedisQueue, ids: list[str]) -> list[Any]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            jobs = queue.get_many(ids)
            if all(job.state == State.DONE for job in jobs) and len(jobs) == len(ids):
                return jobs
        except redis.ConnectionError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not done in {WAIT_S} s: {queue.counts()}")


def recorded(folders: list[Path], log: str = "recorded.log") -> list[str]:
    lines = []
    for folder in folders:
        path = folder / log
        if path.exists():
            lines += path.read_text().split()
    return lines


def assert_each_recorded_once(jobs: list[Any], folders: list[Path]) -> None:
    """Every job done once: one log line each, its PNG where its worker wrote it, none else."""
    assert sorted(recorded(folders)) == sorted(job.id for job in jobs)
    for job in jobs:
        [name] = job.outputs
        assert (Path(job.info["host"]) / name).read_text() == json.dumps(job.params)
    pngs = sorted(path.stem for folder in folders for path in folder.glob("*.png"))
    assert pngs == sorted(job.id for job in jobs)  # killed mid-write or lost leases: none left


def stop(processes: list[Any]) -> None:
    for process in processes:
        if process.is_alive():
            process.kill()
        process.join(10)


@pytest.mark.slow
def test_killing_a_worker_mid_job_ten_times_loses_and_doubles_nothing(
    valkey_url: str, tmp_path: Path
) -> None:
    hosts = [tmp_path / "host-a", tmp_path / "host-b"]
    with RedisQueue(valkey_url, lease_s=LEASE_S) as queue:
        # a job back in the queue keeps its place, so the next victim often takes it again: with
        # attempts for every kill no job may die of them, and each must end done exactly once
        ids = [
            queue.submit("txt2img", {"i": i}, f"user{i % 3}", max_attempts=11).id for i in range(24)
        ]
        survivor = start_worker(valkey_url, "b", hosts[1])
        victims = []
        try:
            for kill in range(10):
                victim = start_worker(valkey_url, f"a{kill}", hosts[0])
                victims.append(victim)
                while queue.counts()[State.RUNNING] == 0 and queue.depth():
                    time.sleep(0.02)
                time.sleep(random.uniform(0.3, 1.2))  # the spawn takes ~0.5 s, a render 0.2-0.5 s
                os.kill(victim.pid, signal.SIGKILL)
                victim.join(10)
            jobs = wait_until_done(queue, ids)
        finally:
            stop([survivor, *victims])  # a failure must not leave workers behind
    assert_each_recorded_once(jobs, hosts)
    assert any(job.attempts > 1 for job in jobs)  # some were killed mid-job and ran again


def test_a_valkey_restart_from_its_aof_mid_run_loses_no_accepted_job(tmp_path: Path) -> None:
    server = ValkeyServer(tmp_path / "valkey").start()
    host = tmp_path / "host"
    try:
        with RedisQueue(server.url, lease_s=LEASE_S) as queue:
            ids = [queue.submit("txt2img", {"i": i}, "alice").id for i in range(12)]
            worker = start_worker(server.url, "w", host)
            while queue.counts()[State.DONE] < 3:
                time.sleep(0.05)
            server.kill()
            server.start()  # same port and folder: it reads the AOF back
            ids += [queue.submit("txt2img", {"i": i}, "bob").id for i in range(12, 16)]
            jobs = wait_until_done(queue, ids)
            stop([worker])
        assert_each_recorded_once(jobs, [host])
    finally:
        server.stop()


def test_a_worker_frozen_past_its_lease_records_nothing(valkey_url: str, tmp_path: Path) -> None:
    hosts = [tmp_path / "slow", tmp_path / "fast"]
    with RedisQueue(valkey_url, lease_s=LEASE_S) as queue:
        job = queue.submit("txt2img", {"prompt": "rider"}, "alice")
        slow = start_worker(valkey_url, "slow", hosts[0])
        while queue.get(job.id).state != State.RUNNING:
            time.sleep(0.02)
        os.kill(slow.pid, signal.SIGSTOP)  # alive, but neither rendering nor renewing
        fast = start_worker(valkey_url, "fast", hosts[1])
        [done] = wait_until_done(queue, [job.id])
        os.kill(slow.pid, signal.SIGCONT)  # it wakes up, finishes its render, tries to record
        deadline = time.monotonic() + WAIT_S
        while not recorded(hosts[:1], "lost.log") and time.monotonic() < deadline:
            time.sleep(0.05)
        stop([slow, fast])
    assert recorded(hosts[:1], "lost.log") == [job.id]
    assert (done.attempts, done.info["host"]) == (2, str(hosts[1]))
    assert_each_recorded_once([done], hosts)
