"""A worker process: one per device, started and watched by the service (`supervisor.py`).

It loads its `Engine` once and keeps it warm, then loops: claim the next job in fair order (plus
up to `max_batch - 1` queued jobs with the same batch key, rendered in one pipeline call) and hand
the jobs to their kind's runner (`engine.service.kinds.KINDS`), which renders, saves PNGs under
`outputs/` and completes them. While it renders, a heartbeat thread renews the leases every
`lease_s / 3` seconds, progress is written at most every `progress_s`, and cancellation is checked
at most every `poll_s` between denoising steps.

How a job's attempt ends here:

- done: PNGs saved with `save_png`, the job completed with their paths and WebUI's info object
  (a worker on another host sends the files with the result: `shared_files.py`).
- bad parameters (a `ValueError`, e.g. an unknown LoRA): `failed` at once, the message and its
  code (`posterbot.errors`) kept.
- out of GPU memory: retried once with every job split into pieces of half its batch size,
  then `failed` (`out_of_memory`) with a message that says what to ask for instead.
- any other exception: the attempt is given back with the error (`fail(retry=True)`,
  `internal`), so the job runs again and ends `dead` with that error once `max_attempts` are
  used up.
- cancel requested: the batch stops between steps; cancelled jobs are marked `cancelled`, their
  batch partners go back to the queue without spending an attempt.
- SIGTERM, or the service process died: the batch stops between steps and goes back to the
  queue without spending an attempt (`release`), then the process exits.
- the process itself dies (kill -9, segfault, OOM killer): the service sees the exit and gives the
  attempt back with the exit code (else the lease runs out), then starts a new worker.
- the queue's server goes away (a Valkey restart): the worker keeps rendering what it holds,
  waits for the server with backoff (`QueueLink`), then records the result (or learns that its
  lease was lost) and claims again; it never exits for it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import multiprocessing
import random
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.service.kinds import KINDS
from engine.service.queue_backend import open_queue
from engine.service.queue_base import JobQueueBase
from engine.service.queue_common import Job, JobStateError
from engine.service.shared_files import result_names, ship
from posterbot.config import Config
from posterbot.errors import Failure, code_of
from posterbot.logs import LogSetup, setup_worker

log = logging.getLogger(__name__)


OUTAGE_FIRST_WAIT_S = 0.5  # a worker retries a queue server that went away after this,
OUTAGE_MAX_WAIT_S = 10.0  # doubling up to this: a restart is noticed within seconds


class QueueLink:
    """A worker's calls to the queue across an outage of its server (a Valkey restart, a network
    cut): `patiently` waits and retries until the server answers (claims, recording a result),
    `if_reachable` gives up at once (progress, a renewal, a cancel check: the next comes soon).
    The log says once, in words, that the server went away, and when it answers again."""

    def __init__(self, queue: JobQueueBase, worker_id: str) -> None:
        self.queue = queue
        self.worker_id = worker_id
        self.down_since: float | None = None
        self._lock = threading.Lock()

    def patiently(
        self, call: Callable[..., Any], *args: Any, until: threading.Event | None = None, **kw: Any
    ) -> Any:
        """`call(*args, **kw)` once the server answers; None if `until` is set first."""
        wait = OUTAGE_FIRST_WAIT_S
        while until is None or not until.is_set():
            try:
                return self._answered(call(*args, **kw))
            except self.queue.unavailable as exc:
                self._went_away(exc)
            time.sleep(wait * random.uniform(0.8, 1.2))  # workers do not return in lockstep
            wait = min(OUTAGE_MAX_WAIT_S, wait * 2)
        return None

    def if_reachable(self, call: Callable[..., Any], *args: Any, default: Any = None) -> Any:
        """`call(*args)`, or `default` while the server is away."""
        try:
            return self._answered(call(*args))
        except self.queue.unavailable as exc:
            self._went_away(exc)
            return default

    def _went_away(self, exc: Exception) -> None:
        with self._lock:
            if self.down_since is None:
                self.down_since = time.monotonic()
                log.warning(
                    "worker %s: the queue server %s is unreachable (%s); retrying, up to every"
                    " %.0f s, and keeping the jobs in hand",
                    self.worker_id,
                    self.queue.where,
                    exc,
                    OUTAGE_MAX_WAIT_S,
                )

    def _answered(self, result: Any) -> Any:
        if self.down_since is not None:
            with self._lock:
                if self.down_since is not None:
                    log.warning(
                        "worker %s: the queue server %s answers again after %.0f s",
                        self.worker_id,
                        self.queue.where,
                        time.monotonic() - self.down_since,
                    )
                    self.down_since = None
        return result


class Heartbeat(threading.Thread):
    """Renews the leases of the jobs in hand; notices when the service process is gone."""

    def __init__(self, link: QueueLink, lease_s: float, stopping: threading.Event):
        super().__init__(name="heartbeat", daemon=True)
        self.link = link
        self.queue = link.queue
        self.worker_id = link.worker_id
        self.lease_s = lease_s
        self.stopping = stopping
        self.held: list[str] = []  # set by the worker loop; read here
        self.lost: set[str] = set()  # jobs whose lease another worker took over
        self.parent = multiprocessing.parent_process()

    def run(self) -> None:
        while True:  # until the process exits: a stopping batch still needs its lease to release
            time.sleep(self.lease_s / 3)
            if self.parent is not None and not self.parent.is_alive():
                log.warning("worker %s: the service process is gone; stopping", self.worker_id)
                self.stopping.set()
            self.beat()

    def beat(self) -> list[str]:
        """Renew now; returns the ids still held (all of them while the server is away: the
        lease runs on its clock, and recording the result checks it again)."""
        held = list(self.held)
        kept = self.link.if_reachable(self.queue.heartbeat, self.worker_id, held, self.lease_s)
        if kept is None:
            return held
        self.lost |= set(held) - set(kept)
        return kept


class StepGate:
    """The engine's per-step callbacks for one batch: throttled progress writes and stop checks."""

    def __init__(self, worker: Worker, jobs: list[Job]) -> None:
        self.worker = worker
        self.jobs = jobs
        self.last_progress = 0.0
        self.last_check = time.monotonic()

    def progress(
        self, stage: str, step: int, total: int, force: bool = False, **details: Any
    ) -> None:
        """Write the step (and a job kind's `details`) to every job of the batch, at most every
        `progress_s` unless `force`."""
        now = time.monotonic()
        throttled = now - self.last_progress < self.worker.config.engine.progress_s
        if throttled and step < total and not force:
            return
        self.last_progress = now
        queue = self.worker.queue
        for job in self.jobs:
            call = functools.partial(queue.set_progress, job.id, step, total, stage, **details)
            self.worker.link.if_reachable(call)

    def cancelled(self) -> bool:
        """True when the worker is stopping, or (checked every `poll_s`) a job was cancelled."""
        if self.worker.stopping.is_set():
            return True
        now = time.monotonic()
        if now - self.last_check < self.worker.config.engine.poll_s:
            return False
        self.last_check = now
        ids = {job.id for job in self.jobs}
        if ids <= self.worker.heartbeat.lost:
            return True  # every job runs elsewhere now: stop wasting the device
        asked = self.worker.queue.is_cancel_requested
        return any(self.worker.link.if_reachable(asked, job_id, default=False) for job_id in ids)


class Worker:
    """Claims and renders jobs on one device until told to stop."""

    def __init__(
        self,
        config: Config,
        worker_id: str,
        device: str = "auto",
        load_engine: Callable[[Config, str | None], Any] | None = None,
        pool: str | None = None,
        remote: bool = False,
    ) -> None:
        """`load_engine(config, model)` builds an `Engine` (inject a wrapper in tests); `pool`:
        the worker pool it claims from (default `[queue] pool`); `remote`: on another host than
        the service's, so its results travel to the service through the queue (`ship`)."""
        self.config = dataclasses.replace(
            config, models=dataclasses.replace(config.models, device=device)
        )
        self.worker_id = worker_id
        self.remote = remote
        self.queue = open_queue(config, pool=pool)
        self.stopping = threading.Event()
        self.link = QueueLink(self.queue, worker_id)
        self.heartbeat = Heartbeat(self.link, config.engine.lease_s, self.stopping)
        self.load_engine = load_engine or _load_engine
        self.engine: Any = None
        self.engine_model: str | None = None

    def engine_for(self, model: str | None) -> Any:
        """The warm engine for `model` (None = the base model), loading it on first use."""
        if self.engine is None or model != self.engine_model:
            self.engine = None  # free the old pipeline's memory before loading the new one
            self.engine = self.load_engine(self.config, model)
            self.engine_model = model
        return self.engine

    def serve(self, ready: Any = None) -> None:
        """Claim and run batches on the warm base model until `stopping` is set."""
        self.engine_for(None)
        self.heartbeat.start()
        if ready is not None:
            ready.set()
        log.info("worker %s ready on %s", self.worker_id, self.config.models.device)
        engine = self.config.engine
        while not self.stopping.is_set():
            claim = self.queue.claim
            jobs = self.link.patiently(
                claim, self.worker_id, engine.lease_s, engine.max_batch, until=self.stopping
            )
            if jobs:
                self.run(jobs)
            else:  # until a job becomes claimable (at most poll_s; never raises)
                self.queue.wait_for_work(engine.poll_s)
        log.info("worker %s stopped", self.worker_id)

    def run(self, jobs: list[Job]) -> None:
        """Hand claimed jobs (one kind) to their kind's runner."""
        KINDS[jobs[0].kind].load_runner()(self, jobs)

    def guarded(self, jobs: list[Job], work: Callable[[], None]) -> None:
        """Run `work` holding the jobs' leases (on top of a training job's, when posters render
        between its steps); an exception ends the jobs as the module docstring says."""
        from engine.diffusion.generate import Cancelled

        held = self.heartbeat.held
        self.heartbeat.held = held + [job.id for job in jobs]
        try:
            work()
        except Cancelled:
            self._stop_early(jobs)
        except (ValueError, Failure) as exc:
            code, values = code_of(exc)
            for job in jobs:
                self.end(job, "fail", error=str(exc), retry=False, code=code, values=values)
        except Exception as exc:
            log.exception("worker %s: jobs %s failed", self.worker_id, [j.id for j in jobs])
            for job in jobs:
                self.end(job, "fail", error=f"{type(exc).__name__}: {exc}", retry=True)
        finally:
            self.heartbeat.held = held

    def complete(self, job: Job, outputs: list[str], info: dict[str, Any]) -> bool:
        """Record a finished job: done, or cancelled when a cancel stopped it early (what it made
        before stopping is kept); False when the lease was lost."""
        stopped = self.link.patiently(self.queue.is_cancel_requested, job.id)
        return self.end(
            job, "mark_cancelled" if stopped else "complete", outputs=outputs, info=info
        )

    def _stop_early(self, jobs: list[Job]) -> None:
        """After a stop between steps: cancelled jobs end cancelled, the rest go back queued."""
        for job in jobs:
            if self.link.patiently(self.queue.is_cancel_requested, job.id):
                self.end(job, "mark_cancelled")
            else:
                self.end(job, "release")

    def end(self, job: Job, action: str, **kwargs: Any) -> bool:
        """Call queue.<action> for a job this worker holds; False when the lease was lost. A
        remote worker's outputs go with the result and leave its disk once recorded."""
        made = []
        if self.remote and kwargs.get("outputs"):
            made = result_names(kwargs["outputs"], kwargs.get("info"))
            kwargs["outputs"], kwargs["info"], kwargs["files"] = ship(
                self.config.outputs_dir, self.worker_id, kwargs["outputs"], kwargs.get("info")
            )
        try:  # a result waits out an outage of the server: it is the point of the work
            self.link.patiently(
                getattr(self.queue, action), job.id, worker_id=self.worker_id, **kwargs
            )
        except JobStateError as exc:
            log.warning("worker %s: could not %s job %s: %s", self.worker_id, action, job.id, exc)
            return False
        for name in made:
            (self.config.outputs_dir / name).unlink(missing_ok=True)
        return True


def _load_engine(config: Config, model: str | None) -> Any:
    from engine.diffusion.generate import Engine

    return Engine(config, model=model)


def worker_main(
    config: Config, device: str, worker_id: str, ready: Any = None, logs: LogSetup | None = None
) -> None:
    """Process entry point (multiprocessing spawn target): run a worker until SIGTERM; its log
    lines go where the service's do (`logs`)."""
    setup_worker(logs, worker_id)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the service, which stops us
    worker = Worker(config, worker_id, device)
    worker.engine_for(None)  # until loaded, SIGTERM simply ends the process: nothing is claimed
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.stopping.set())
    worker.serve(ready)


ANNOUNCE_EVERY_S = 30.0  # well inside queue_redis.ANNOUNCE_TTL_S


def capabilities(worker: Worker) -> dict[str, Any]:
    """What a worker can run, for the service's routing: models, LoRAs, device and its memory."""
    import torch

    from engine.diffusion.registry import Registry

    registry = Registry(worker.config)
    device = worker.config.models.device
    vram = None
    if device.startswith("cuda") and torch.cuda.is_available():
        vram = torch.cuda.get_device_properties(torch.device(device)).total_memory
    return {
        "host": socket.gethostname(),
        "device": device,
        "vram_bytes": vram,
        "models": [registry.checkpoint(None).name] + [r.name for r in registry.checkpoints()],
        "loras": sorted(registry.loras()),
    }


def remote_worker_main(config: Config, device: str, pool: str | None) -> None:
    """`posterbot worker`: a worker on any host with the models, claiming from the shared
    queue at `[queue] url` until SIGTERM or Ctrl-C; it says what it runs every ANNOUNCE_EVERY_S."""
    worker_id = f"{socket.gethostname()}/{device}-{secrets.token_hex(3)}"
    worker = Worker(config, worker_id, device, pool=pool, remote=True)
    worker.engine_for(None)  # loaded and warm before it takes a job
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: worker.stopping.set())
    found = capabilities(worker)

    def announce() -> None:
        while not worker.stopping.is_set():
            worker.link.if_reachable(worker.queue.announce, worker_id, found)  # again next time
            worker.stopping.wait(ANNOUNCE_EVERY_S)

    threading.Thread(target=announce, name="announce", daemon=True).start()
    worker.serve()
