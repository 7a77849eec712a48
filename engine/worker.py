"""A worker process: one per device, started and watched by the service (`engine.server`).

It loads its `Engine` once and keeps it warm, then loops: claim the next job in fair order (plus
up to `max_batch - 1` queued jobs with the same batch key, rendered in one pipeline call), render,
save PNGs under `outputs/`, complete. While it renders, a heartbeat thread renews the leases every
`lease_s / 3` seconds, progress is written at most every `progress_s`, and cancellation is checked
at most every `poll_s` between denoising steps.

How a job's attempt ends here:

- done: PNGs saved with `save_png`, the job completed with their paths and WebUI's info object.
- bad parameters (a `ValueError`, e.g. an unknown LoRA): `failed` at once, the message kept.
- out of GPU memory: retried once with every job split into pieces of half its batch size,
  then `failed` with a message that says what to ask for instead.
- any other exception: the attempt is given back with the error (`fail(retry=True)`), so the job
  runs again and ends `dead` with that error once `max_attempts` are used up.
- cancel requested: the batch stops between steps; cancelled jobs are marked `cancelled`, their
  batch partners go back to the queue without spending an attempt.
- SIGTERM, or the service process died: the batch stops between steps and goes back to the
  queue without spending an attempt (`release`), then the process exits.
- the process itself dies (kill -9, segfault, OOM killer): the service sees the exit and gives the
  attempt back with the exit code (else the lease runs out), then starts a new worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.outputs import save_png
from engine.params import GenerationParams, from_request, resolve_seeds
from engine.queue import Job, JobQueue, JobStateError, State
from posterbot.config import Config

log = logging.getLogger(__name__)

QUEUE_FILE = "engine.db"  # under data_dir, next to bot.db
RUNNING_SCAN_LIMIT = 1000  # running jobs are at most workers × max_batch; this is ample


def timeout_of(config: Config, kind: str) -> tuple[int, str]:
    """How long a job of `kind` may run, and the setting that says so."""
    if kind == "train":
        return config.training.job_timeout_s, "training.job_timeout_s"
    return config.engine.job_timeout_s, "engine.job_timeout_s"


class GpuOutOfMemory(Exception):
    """Still out of GPU memory after the retry with smaller batches."""


def queue_path(config: Config) -> Path:
    return config.data_dir / QUEUE_FILE


def open_queue(config: Config, workers: int = 1) -> JobQueue:
    """The job queue file of this data folder, with the [engine] limits."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return JobQueue(
        queue_path(config),
        max_queue=config.engine.max_queue,
        max_attempts=config.engine.max_attempts,
        workers=workers,
    )


def batch_key(model: str | None, params: GenerationParams) -> str:
    """Jobs with equal keys may share a pipeline call: same model and same `params.batch_key()`."""
    return json.dumps({"model": model, "params": params.batch_key()})


def job_params(job: Job, config: Config) -> tuple[str | None, GenerationParams]:
    """The model name and checked params a job asks for (ValueError naming a bad field)."""
    request = dict(job.params)
    model = request.pop("model", None)
    return model, from_request(request, config.generation, config.limits)


class Heartbeat(threading.Thread):
    """Renews the leases of the jobs in hand; notices when the service process is gone."""

    def __init__(self, queue: JobQueue, worker_id: str, lease_s: float, stopping: threading.Event):
        super().__init__(name="heartbeat", daemon=True)
        self.queue = queue
        self.worker_id = worker_id
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
        """Renew now; returns the ids still held."""
        held = list(self.held)
        kept = self.queue.heartbeat(self.worker_id, held, self.lease_s)
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
        for job in self.jobs:
            self.worker.queue.set_progress(job.id, step, total, stage, **details)

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
        return any(self.worker.queue.is_cancel_requested(job_id) for job_id in ids)


class Worker:
    """Claims and renders jobs on one device until told to stop."""

    def __init__(
        self,
        config: Config,
        worker_id: str,
        device: str = "auto",
        load_engine: Callable[[Config, str | None], Any] | None = None,
    ) -> None:
        """`load_engine(config, model)` builds an `Engine` (inject a wrapper in tests)."""
        self.config = dataclasses.replace(
            config, models=dataclasses.replace(config.models, device=device)
        )
        self.worker_id = worker_id
        self.queue = open_queue(config)
        self.stopping = threading.Event()
        self.heartbeat = Heartbeat(self.queue, worker_id, config.engine.lease_s, self.stopping)
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
            jobs = self.queue.claim(self.worker_id, engine.lease_s, engine.max_batch)
            if jobs:
                self.run(jobs)
            else:
                self.stopping.wait(engine.poll_s)
        log.info("worker %s stopped", self.worker_id)

    def run(self, jobs: list[Job]) -> None:
        """Run claimed jobs by kind: txt2img jobs as one batch, train and xyz alone."""
        if jobs[0].kind == "txt2img":
            self.run_batch(jobs)
        else:
            self.run_alone(jobs[0])

    def run_alone(self, job: Job) -> None:
        """A train or xyz job: `engine.worker_training.RUNNERS[kind]` returns its results."""
        from engine.worker_training import RUNNERS

        def work() -> None:
            outputs, info = RUNNERS[job.kind](self, job)
            stopped = self.queue.is_cancel_requested(job.id)
            self._end(job, "mark_cancelled" if stopped else "complete", outputs=outputs, info=info)

        self._guarded([job], work)

    def run_batch(self, jobs: list[Job]) -> None:
        """Render claimed jobs together and record how each one ended."""
        # 1. check each job's params; a bad one fails alone
        wanted: list[tuple[Job, str | None, GenerationParams]] = []
        for job in jobs:
            try:
                wanted.append((job, *job_params(job, self.config)))
            except ValueError as exc:
                self._end(job, "fail", error=str(exc), retry=False)
        if not wanted:
            return
        jobs = [job for job, _, _ in wanted]
        model = wanted[0][1]  # equal batch keys: one model for the whole batch

        def work() -> None:
            # 2. render on the warm engine
            gate = StepGate(self, jobs)
            results = render_with_retry(
                self.engine_for(model), [p for _, _, p in wanted], gate.progress, gate.cancelled
            )
            # 3. save and complete the jobs still ours
            self._finish(jobs, results)

        self._guarded(jobs, work)

    def _guarded(self, jobs: list[Job], work: Callable[[], None]) -> None:
        """Run `work` holding the jobs' leases (on top of a training job's, when posters render
        between its steps); an exception ends the jobs as the module docstring says."""
        from engine.generate import Cancelled

        held = self.heartbeat.held
        self.heartbeat.held = held + [job.id for job in jobs]
        try:
            work()
        except Cancelled:
            self._stop_early(jobs)
        except (ValueError, GpuOutOfMemory) as exc:
            for job in jobs:
                self._end(job, "fail", error=str(exc), retry=False)
        except Exception as exc:
            log.exception("worker %s: jobs %s failed", self.worker_id, [j.id for j in jobs])
            for job in jobs:
                self._end(job, "fail", error=f"{type(exc).__name__}: {exc}", retry=True)
        finally:
            self.heartbeat.held = held

    def _finish(self, jobs: list[Job], results: list[Any]) -> None:
        """Save each job's PNGs and complete it; a job whose lease was lost keeps no files."""
        kept = set(self.heartbeat.beat())
        outputs_dir = self.config.outputs_dir
        for job, result in zip(jobs, results, strict=True):
            if job.id not in kept:
                log.warning(
                    "worker %s: lost the lease of %s; dropping its images", self.worker_id, job.id
                )
                continue
            paths = [
                save_png(outputs_dir, seed, result.png(i)) for i, seed in enumerate(result.seeds)
            ]
            relative = [path.relative_to(outputs_dir).as_posix() for path in paths]
            if not self._end(job, "complete", outputs=relative, info=result.info()):
                for path in paths:
                    path.unlink(missing_ok=True)

    def _stop_early(self, jobs: list[Job]) -> None:
        """After a stop between steps: cancelled jobs end cancelled, the rest go back queued."""
        for job in jobs:
            if self.queue.is_cancel_requested(job.id):
                self._end(job, "mark_cancelled")
            else:
                self._end(job, "release")

    def _end(self, job: Job, action: str, **kwargs: Any) -> bool:
        """Call queue.<action> for a job this worker holds; False when the lease was lost."""
        try:
            getattr(self.queue, action)(job.id, worker_id=self.worker_id, **kwargs)
            return True
        except JobStateError as exc:
            log.warning("worker %s: could not %s job %s: %s", self.worker_id, action, job.id, exc)
            return False


def _load_engine(config: Config, model: str | None) -> Any:
    from engine.generate import Engine

    return Engine(config, model=model)


def render_with_retry(
    engine: Any,
    params: list[GenerationParams],
    progress: Callable[[str, int, int], None],
    cancelled: Callable[[], bool],
) -> list[Any]:
    """`engine.txt2img_batch`, retried once on out-of-GPU-memory with half-size pieces."""
    import torch

    try:
        return engine.txt2img_batch(params, progress, cancelled)
    except torch.cuda.OutOfMemoryError:
        log.warning("out of GPU memory with %d job(s); retrying in smaller batches", len(params))
        torch.cuda.empty_cache()
    results = []
    for job in params:
        resolved = resolve_seeds(job)  # every piece must continue the same seeds
        pieces = split_batch(resolved)
        try:
            parts = [engine.txt2img_batch([piece], progress, cancelled)[0] for piece in pieces]
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            size = max(piece.batch_size for piece in pieces)
            raise GpuOutOfMemory(
                f"out of GPU memory rendering {job.width}x{job.height} even {size} image(s) at"
                " a time; ask for a smaller size or fewer images, or retry when the GPU is freer"
            ) from None
        results.append(merge_results(resolved, parts))
    return results


def split_batch(params: GenerationParams) -> list[GenerationParams]:
    """One job as pieces of at most half its batch size, one iteration each, with the seeds
    (or variation seeds) each image would have had in the whole job."""
    half = max(1, math.ceil(params.batch_size / 2))
    pieces = []
    for start in range(0, params.image_count, params.batch_size):
        for offset in range(start, start + params.batch_size, half):
            count = min(half, start + params.batch_size - offset)
            varied = params.subseed_strength > 0
            pieces.append(
                dataclasses.replace(
                    params,
                    batch_size=count,
                    n_iter=1,
                    seed=params.seed if varied else params.seed + offset,
                    subseed=params.subseed + offset if varied else params.subseed,
                )
            )
    return pieces


def merge_results(params: GenerationParams, parts: list[Any]) -> Any:
    """The pieces' results as one result of the whole job."""
    return dataclasses.replace(
        parts[0],
        params=params,
        images=[image for part in parts for image in part.images],
        seeds=[seed for part in parts for seed in part.seeds],
        subseeds=[seed for part in parts for seed in part.subseeds],
        infotexts=[text for part in parts for text in part.infotexts],
    )


def worker_main(config: Config, device: str, worker_id: str, ready: Any = None) -> None:
    """Process entry point (multiprocessing spawn target): run a worker until SIGTERM."""
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s %(levelname)s worker {worker_id}: %(message)s"
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the service, which stops us
    worker = Worker(config, worker_id, device)
    worker.engine_for(None)  # until loaded, SIGTERM simply ends the process: nothing is claimed
    signal.signal(signal.SIGTERM, lambda signum, frame: worker.stopping.set())
    worker.serve(ready)


# -- the service side: starting and watching worker processes -----------------------------------

MAX_RESTART_DELAY_S = 60.0  # a worker that keeps dying while loading (bad model) retries slowly
STOP_GRACE_S = 30.0  # SIGTERM → the worker releases its batch at the next step, then exits


def worker_devices(devices: list[str], visible_gpus: int) -> list[str]:
    """`[engine] devices` with "auto" spelled out: every visible GPU (cuda:0, cuda:1, ...), or the
    CPU when there is none. One worker process runs per entry."""
    spelled = []
    for device in devices:
        if device == "auto":
            spelled += [f"cuda:{index}" for index in range(visible_gpus)] or ["cpu"]
        else:
            spelled.append(device)
    return spelled


def visible_gpu_count(environ: Mapping[str, str] = os.environ, dev: Path = Path("/dev")) -> int:
    """CUDA devices this process may use, found without importing torch (the service never
    does): CUDA_VISIBLE_DEVICES when set, else the NVIDIA device files (/dev/nvidia0, ...)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return len([path for path in dev.glob("nvidia*") if path.name[6:].isdigit()])
    count = 0
    for entry in visible.split(","):
        if not entry.strip() or entry.strip().startswith("-"):
            break  # CUDA ignores the list from the first invalid entry on ("-1" hides all)
        count += 1
    return count


@dataclasses.dataclass
class WorkerSlot:
    """One device's worker process, restarted whenever it dies."""

    device: str
    index: int
    worker_id: str = ""
    process: Any = None  # multiprocessing.Process of the current incarnation
    ready: Any = None  # multiprocessing.Event set once the engine is loaded
    restarts: int = 0
    load_failures: int = 0  # consecutive deaths before becoming ready
    next_start: float = 0.0
    timed_out: str | None = None  # the error to record for its jobs after a timeout kill

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def status(self) -> dict[str, Any]:
        return {
            "id": self.worker_id,
            "device": self.device,
            "pid": self.process.pid if self.process is not None else None,
            "alive": self.alive(),
            "ready": self.alive() and self.ready.is_set(),
            "restarts": self.restarts,
        }


class Supervisor:
    """Starts one worker process per device and keeps them running (call `check` periodically).

    A dead worker's running jobs get their attempt back as failed-with-retry at once (the error
    says how it died) instead of waiting for the lease. A job running past `job_timeout_s` gets
    its worker killed and fails for good with "took longer than N s": a render that slow would
    time out again, and retrying it would hold the device from everyone else for attempts × N s.
    """

    def __init__(self, config: Config, queue: JobQueue, devices: list[str]) -> None:
        """`devices`: one worker each, as `worker_devices` spells them out."""
        self.config = config
        self.queue = queue
        self.context = multiprocessing.get_context("spawn")  # never fork a process holding CUDA
        self.slots = [WorkerSlot(device, n) for n, device in enumerate(devices)]
        self._lock = threading.Lock()

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        slot.worker_id = f"{slot.device}#{slot.index}-{secrets.token_hex(3)}"
        slot.ready = self.context.Event()
        slot.timed_out = None
        slot.process = self.context.Process(
            target=worker_main,
            args=(self.config, slot.device, slot.worker_id, slot.ready),
            name=f"posterbot-worker-{slot.index}",
        )
        slot.process.start()
        log.info("started worker %s (pid %d)", slot.worker_id, slot.process.pid)

    def check(self) -> None:
        """One supervision pass: time out overlong jobs, restart dead workers."""
        with self._lock:
            running = self.queue.list_jobs(state=State.RUNNING, limit=RUNNING_SCAN_LIMIT)
            now = time.time()
            for slot in self.slots:
                if slot.process is None:
                    if now >= slot.next_start:
                        self._spawn(slot)
                    continue
                mine = [job for job in running if job.lease_owner == slot.worker_id]
                if slot.alive():
                    self._enforce_timeout(slot, mine, now)
                if not slot.alive():
                    self._on_exit(slot, mine, now)

    def _enforce_timeout(self, slot: WorkerSlot, jobs: list[Job], now: float) -> None:
        """Kill the worker if one of its jobs has run longer than its kind may."""
        for job in jobs:
            limit, setting = timeout_of(self.config, job.kind)
            if job.started_at is not None and now - job.started_at > limit:
                slot.timed_out = f"took longer than {limit} s ({setting}); its worker was restarted"
                log.error("worker %s: %s; killing it", slot.worker_id, slot.timed_out)
                slot.process.kill()
                slot.process.join()
                return

    def _on_exit(self, slot: WorkerSlot, jobs: list[Job], now: float) -> None:
        """Record how the dead worker's jobs ended and schedule its restart."""
        code = slot.process.exitcode
        for job in jobs:
            error = slot.timed_out or f"worker {slot.worker_id} died (exit code {code}) running it"
            # JobStateError: it finished or was released between the scan and now
            with contextlib.suppress(JobStateError):
                self.queue.fail(
                    job.id, error, retry=slot.timed_out is None, worker_id=slot.worker_id
                )
        if slot.ready.is_set():
            slot.load_failures = 0
        else:
            slot.load_failures += 1
        delay = 0.0 if not slot.load_failures else min(MAX_RESTART_DELAY_S, 2.0**slot.load_failures)
        log.warning(
            "worker %s exited with code %s; restarting in %.0f s", slot.worker_id, code, delay
        )
        slot.process = None
        slot.restarts += 1
        slot.next_start = now + delay

    def run(self, stop: threading.Event) -> None:
        """Supervise every `poll_s` until `stop` is set (run it in a thread)."""
        while not stop.wait(self.config.engine.poll_s):
            try:
                self.check()
            except Exception:
                log.exception("supervisor pass failed")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM every worker (their batches go back queued), kill those still running."""
        with self._lock:
            live = [slot.process for slot in self.slots if slot.alive()]
            for process in live:
                process.terminate()
            deadline = time.monotonic() + grace_s
            for process in live:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
                    process.join()

    def status(self) -> list[dict[str, Any]]:
        return [slot.status() for slot in self.slots]
