"""The runners of "train" and "xyz" jobs (`engine.service.kinds.KINDS`), one job at a time.

train: `engine.training.lora.run_training` with the job's params, its callbacks wired to the
queue. `progress` → the job's progress `{"stage": "train", "epoch", "step", "total", "loss",
"eta_s"}`, written at most every `progress_s` and at once when an epoch ends, then with that
epoch's loss curve and samples (`saved_epoch`, `loss_curve`, `samples`), copied under
`outputs/training/<version>/` so `/v1/outputs` serves them. `cancelled` → the job's cancel or the
worker stopping. `between_steps` → the worker renders the poster (txt2img) jobs waiting in the
queue with its warm Engine, so posters keep flowing while a LoRA trains (docs/training.md). A
killed run is claimed again like any job, and `run_training` resumes it from its last saved epoch.
On a worker on another host (`posterbot worker`) the dataset comes from the service through the
queue's server (`shared_files.fetch_dataset`), and the LoRA files go back to it in the job's info
(`ship_loras`); the service installs them as its own version (`shared_files.install_loras`).

xyz: `engine.grid.render_xyz` on the worker's warm Engine; the grid PNG goes under outputs/.
"""

from __future__ import annotations

import functools
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.diffusion.outputs import save_png
from engine.service.queue_common import Job
from engine.service.run_posters import run_posters
from engine.service.shared_files import (
    DATASET_KEY,
    LORAS_KEY,
    fetch_dataset,
    share_outputs,
    ship_loras,
)
from engine.service.worker import StepGate, Worker

TRAINING_OUTPUTS = "training"  # outputs/training/<version>/: loss curves and sample images
POSTER_KINDS = ("txt2img",)  # what a training worker renders between its steps

Outcome = tuple[list[str], dict[str, Any]]  # (outputs, info) of a finished job


def publish(worker: Worker, version: str, epoch: int | None = None) -> dict[str, Any]:
    """Copy a run's loss curve and samples (of `epoch`, or all) under outputs/training/<version>/;
    returns their output paths as `{"loss_curve", "samples"}`."""
    run = worker.config.data_dir / "training" / version
    target = worker.config.outputs_dir / TRAINING_OUTPUTS / version
    target.mkdir(parents=True, exist_ok=True)
    pattern = "*.png" if epoch is None else f"e{epoch:06d}-*.png"
    samples = [
        _copy(path, target / path.name, worker) for path in sorted(run.glob(f"samples/{pattern}"))
    ]
    curve_name = "loss.png" if epoch is None else f"loss-e{epoch:06d}.png"
    curve = (
        _copy(run / "loss.png", target / curve_name, worker)
        if (run / "loss.png").exists()
        else None
    )
    return {"loss_curve": curve, "samples": samples}


def _copy(source: Path, target: Path, worker: Worker) -> str:
    shutil.copyfile(source, target)
    return target.relative_to(worker.config.outputs_dir).as_posix()


class TrainingCallbacks:
    """`run_training`'s progress/cancelled/between_steps for one job on one worker."""

    def __init__(self, worker: Worker, job: Job, version: Callable[[], str]) -> None:
        self.worker = worker
        self.gate = StepGate(worker, [job])
        self.job = job
        self.version = version  # the run's version name, known once training has begun
        self.epoch = 0
        self.published: dict[str, Any] = {}  # the last ended epoch's files, shown with progress
        self.last_look = 0.0

    def progress(self, epoch: int, step: int, total: int, loss: float, eta_s: float) -> None:
        """Write the step; when a new epoch starts, publish the one that ended first."""
        ended = self.epoch if epoch > self.epoch > 0 else None
        self.epoch = epoch
        if ended is not None:
            files = publish(self.worker, self.version(), ended)
            if self.worker.remote:  # shown by a service on another host: the files go there
                share = functools.partial(share_outputs, self.worker.config, self.worker.worker_id)
                curve = files["loss_curve"]
                files = {
                    "loss_curve": curve and share([curve])[0],
                    "samples": share(files["samples"]),
                }
            self.published = {"saved_epoch": ended, **files}
        details = {"epoch": epoch, "loss": round(loss, 6), "eta_s": round(eta_s, 1)}
        self.gate.progress(
            "train", step, total, force=ended is not None, **details, **self.published
        )

    def between_steps(self) -> None:
        """Render the posters waiting in the queue (looked for every `poll_s`)."""
        engine = self.worker.config.engine
        if time.monotonic() - self.last_look < engine.poll_s:
            return
        while not self.worker.stopping.is_set():
            jobs = self.worker.queue.claim(
                self.worker.worker_id, engine.lease_s, engine.max_batch, kinds=POSTER_KINDS
            )
            if not jobs:
                break
            run_posters(self.worker, jobs)
        self.last_look = time.monotonic()


def run_train(worker: Worker, jobs: list[Job]) -> None:
    """Train (or resume) the LoRA version the job asks for."""
    (job,) = jobs
    worker.guarded(jobs, lambda: worker.complete(job, *train(worker, job)))


def run_xyz(worker: Worker, jobs: list[Job]) -> None:
    """Render the labelled grid on the warm base-model engine."""
    (job,) = jobs
    worker.guarded(jobs, lambda: worker.complete(job, *xyz(worker, job)))


def train(worker: Worker, job: Job) -> Outcome:
    """Run the training; the job's outputs and info."""
    from engine.diffusion.generate import Cancelled
    from engine.training.params import TrainParams
    from engine.training.trainer import run_training
    from engine.training.versions import Versions

    asked = {key: value for key, value in job.params.items() if key != DATASET_KEY}
    sent = job.params.get(DATASET_KEY)
    if worker.remote and sent:  # the service's dataset, in this host's datasets/ by its hash
        asked["dataset"] = fetch_dataset(worker.config, sent, asked["dataset"])
    params = TrainParams.from_dict(asked).to_dict()

    def version() -> str:
        return Versions(worker.config).unfinished(params["ip"], params)["name"]

    calls = TrainingCallbacks(worker, job, version)
    result = run_training(
        worker.config,
        params,
        progress=calls.progress,
        cancelled=calls.gate.cancelled,
        between_steps=calls.between_steps,
        engine=worker.engine_for(None),
    )
    if result["status"] == "cancelled" and not worker.queue.is_cancel_requested(job.id):
        raise Cancelled  # the worker is stopping: back to the queue, resumed on the next claim
    files = publish(worker, result["version"])
    info = {
        "version": result["version"],
        "status": result["status"],
        "epochs_done": result["epochs_done"],
        "final_loss": result["final_loss"],
        "epoch_losses": result["epoch_losses"],
        "steps": result["steps"],
        "resumed_from_epoch": result["resumed_from_epoch"],
        "file": Path(result["file"]).name if result["file"] else None,
        **files,
    }
    if worker.remote:
        info[LORAS_KEY] = ship_loras(worker.config, result)
    outputs = [files["loss_curve"]] if files["loss_curve"] else []
    return outputs + files["samples"], info


def xyz(worker: Worker, job: Job) -> Outcome:
    """Render the grid; the job's outputs and info."""
    from engine.diffusion.grid import render_xyz

    params = job.params
    engine = worker.engine_for(None)
    lora = params.get("lora")
    grid = render_xyz(
        engine, params["prompt"], params["axes"], params["base"], lora, worker.engine_for
    )
    path = save_png(worker.config.outputs_dir, 0, grid.png())
    axes = [axis.name for axis in (grid.x, grid.y, grid.z) if axis]  # X, Y, Z order
    info = {"ip": params["ip"], "axes": axes, "cells": grid.cells}
    return [path.relative_to(worker.config.outputs_dir).as_posix()], info
