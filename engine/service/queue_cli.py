"""`posterbot worker` (a worker on any host, for a shared Valkey/Redis queue) and `posterbot
queue status | dead-letter [requeue ID]` (what waits, runs and died, per pool)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from engine.service.queue_common import JobNotFound
from posterbot.config import Config
from posterbot.logs import setup_logging


def register(commands: argparse._SubParsersAction) -> None:
    worker = commands.add_parser(
        "worker",
        help="a worker on this host for a shared Valkey/Redis queue",
        description=worker_command.__doc__,
    )
    worker.add_argument(
        "--queue", metavar="URL", help="redis://host:port/db (default: [queue] url)"
    )
    worker.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    worker.add_argument("--pool", help="the worker pool to serve (default: [queue] pool)")
    worker.set_defaults(handler=worker_command)

    queue = commands.add_parser("queue", help="the job queue: status and dead letters")
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="jobs by state, workers, per pool")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=status_command)
    dead = actions.add_parser("dead-letter", help="list dead jobs, or `requeue ID` one")
    dead.add_argument("requeue", nargs="?", choices=["requeue"], help="put a dead job back")
    dead.add_argument("job_id", nargs="?", help="the job to requeue")
    dead.add_argument("--json", action="store_true")
    dead.set_defaults(handler=dead_letter_command)


def with_queue_url(config: Config, url: str | None) -> Config:
    return (
        config
        if not url
        else dataclasses.replace(config, queue=dataclasses.replace(config.queue, url=url))
    )


def worker_command(args: argparse.Namespace, config: Config) -> int:
    """Load the models on this host's device, then claim and render jobs of one pool from the
    shared queue until SIGTERM; the service routes jobs to the pools whose workers run them."""
    from engine.service.worker import remote_worker_main

    config = with_queue_url(config, args.queue)
    if not config.queue.url.startswith(("redis://", "rediss://")):
        raise ValueError(
            "--queue: needs a redis:// URL; with the SQLite queue `posterbot engine` starts the"
            " workers of its own host"
        )
    setup_logging(config.data_dir, terminal=True, verbose=args.verbose)
    remote_worker_main(config, args.device, args.pool)
    return 0


def status_command(args: argparse.Namespace, config: Config) -> int:
    """Jobs by state and the workers that announced themselves."""
    from engine.service.queue_backend import open_queue

    with open_queue(config) as queue:
        report = {
            "queue": config.queue.url or "sqlite (engine.db)",
            "jobs": {state.value: n for state, n in queue.counts().items()},
            "workers": queue.workers_announced(),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"queue {report['queue']}")
    print("  " + "  ".join(f"{state} {n}" for state, n in report["jobs"].items()))
    for worker in report["workers"]:
        print(f"  worker {worker['id']} pool {worker['pool']} on {worker.get('device')}")
    return 0


def dead_letter_command(args: argparse.Namespace, config: Config) -> int:
    """List dead jobs with their last error, or put one back in the queue."""
    from engine.service.queue_backend import open_queue

    with open_queue(config) as queue:
        if args.requeue:
            if not args.job_id:
                raise ValueError("queue dead-letter requeue: give the job's ID")
            try:
                job = queue.requeue_dead(args.job_id)
            except JobNotFound:
                raise ValueError(f"queue dead-letter requeue: no job {args.job_id}") from None
            print(f"{job.id} queued again (position {queue.position(job.id)})")
            return 0
        dead = queue.dead_letters()
    if args.json:
        rows = [{"id": j.id, "kind": j.kind, "user": j.user, "error": j.error} for j in dead]
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for job in dead:
        print(f"{job.id}  {job.kind}  {job.user}  {job.error}", file=sys.stdout)
    return 0
