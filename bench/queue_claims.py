"""Queue throughput: claims per second (claim + complete) with 1 and with 4 worker processes.

    .venv/bin/python bench/queue_claims.py [--jobs N]

Each run fills a fresh queue file with N jobs, starts the workers, and times from the start
signal until every job is done. Every claim and every completion is its own durable
(synchronous=FULL) transaction, so this measures the queue as the engine uses it.
"""

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

from engine.service.queue_common import State
from engine.service.queue_sqlite import JobQueue

LEASE_S = 60.0
USERS = 10  # spread jobs over users so the fair order has real work to do


def work(path: str, worker_id: str, start: object) -> None:
    """Claim and complete jobs until the queue is empty."""
    with JobQueue(path) as queue:
        start.wait()
        while jobs := queue.claim(worker_id, LEASE_S):
            queue.complete(jobs[0].id, [f"{jobs[0].id}.png"], worker_id=worker_id)


def claims_per_second(jobs: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "engine.db")
        with JobQueue(path, max_queue=jobs) as queue:
            for i in range(jobs):
                queue.submit("txt2img", {"i": i}, f"user{i % USERS}")
        ctx = multiprocessing.get_context("spawn")
        start = ctx.Event()
        processes = [ctx.Process(target=work, args=(path, f"w{n}", start)) for n in range(workers)]
        for process in processes:
            process.start()
        time.sleep(1.0)  # let every worker import and open the file before the clock starts
        began = time.perf_counter()
        start.set()
        for process in processes:
            process.join()
        elapsed = time.perf_counter() - began
        with JobQueue(path) as queue:
            done = queue.counts()[State.DONE]
        if done != jobs or any(process.exitcode for process in processes):
            raise SystemExit(f"{workers} workers finished {done} of {jobs} jobs")
        return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per run (default 2000)")
    args = parser.parse_args()
    one = claims_per_second(args.jobs, workers=1)
    four = claims_per_second(args.jobs, workers=4)
    print(f"jobs per run:     {args.jobs}")
    print(f"1 worker:         {one:8.0f} claims/s")
    print(f"4 workers:        {four:8.0f} claims/s")
    print(f"ratio 4w / 1w:    {four / one:8.2f}")


if __name__ == "__main__":
    main()
