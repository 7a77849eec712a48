"""The runner of "txt2img" jobs (posters): a batch of compatible jobs in one pipeline call.

Each job's params are checked again (a bad one fails alone), the batch renders on the worker's
warm Engine, retried once on out-of-GPU-memory with every job split into half-size pieces with
the same per-image seeds, then each job still held gets its PNGs and is completed. A training
worker runs this between its optimizer steps too.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

from engine.diffusion.outputs import save_png
from engine.diffusion.params import GenerationParams, from_request, resolve_seeds
from engine.service.finishing import check_spec, finish
from engine.service.queue_common import Job
from engine.service.worker import StepGate, Worker
from posterbot.config import Config
from posterbot.errors import Failure, code_of

log = logging.getLogger(__name__)


class GpuOutOfMemory(Failure):
    """Still out of GPU memory after the retry with smaller batches."""


def job_params(job: Job, config: Config) -> tuple[str | None, GenerationParams]:
    """The model name and checked params a job asks for (ValueError naming a bad field)."""
    request = dict(job.params)
    model = request.pop("model", None)
    request.pop("poster", None)  # finished after rendering, in save_results
    return model, from_request(request, config.generation, config.limits)


def run_posters(worker: Worker, jobs: list[Job]) -> None:
    """Render claimed jobs together and record how each one ended."""
    # 1. check each job's params; a bad one fails alone
    wanted: list[tuple[Job, str | None, GenerationParams]] = []
    for job in jobs:
        try:
            wanted.append((job, *job_params(job, worker.config)))
        except ValueError as exc:
            code, values = code_of(exc)
            worker.end(job, "fail", error=str(exc), retry=False, code=code, values=values)
    if not wanted:
        return
    jobs = [job for job, _, _ in wanted]
    model = wanted[0][1]  # equal batch keys: one model for the whole batch

    def work() -> None:
        # 2. render on the warm engine
        gate = StepGate(worker, jobs)
        results = render_with_retry(
            worker.engine_for(model), [p for _, _, p in wanted], gate.progress, gate.cancelled
        )
        # 3. save and complete the jobs still ours
        save_results(worker, jobs, results)

    worker.guarded(jobs, work)


def save_results(worker: Worker, jobs: list[Job], results: list[Any]) -> None:
    """Save each job's PNGs and complete it; a job whose lease was lost keeps no files."""
    kept = set(worker.heartbeat.beat())
    outputs_dir = worker.config.outputs_dir
    for job, result in zip(jobs, results, strict=True):
        if job.id not in kept:
            log.warning(
                "worker %s: lost the lease of %s; dropping its images", worker.worker_id, job.id
            )
            continue
        pngs = [result.png(i) for i in range(len(result.seeds))]  # encoded once, saved, finished
        paths = [
            save_png(outputs_dir, seed, png) for seed, png in zip(result.seeds, pngs, strict=True)
        ]
        relative = [path.relative_to(outputs_dir).as_posix() for path in paths]
        info = result.info()
        if "poster" in job.params:  # each picture finished at every size asked for
            spec = check_spec(job.params["poster"], worker.config)
            info["posters"] = [
                finish(worker.config, png, spec, path.stem)
                for png, path in zip(pngs, paths, strict=True)
            ]
            paths += [
                outputs_dir / p[kind]
                for ps in info["posters"]
                for p in ps
                for kind in ("png", "svg")
            ]
        if not worker.end(job, "complete", outputs=relative, info=info):
            for path in paths:
                path.unlink(missing_ok=True)


def render_with_retry(
    engine: Any,
    params: list[GenerationParams],
    progress: Callable[[str, int, int], None],
    cancelled: Callable[[], bool],
) -> list[Any]:
    """`engine.generate_batch`, retried once on out-of-GPU-memory with half-size pieces."""
    import torch

    try:
        return engine.generate_batch(params, progress, cancelled)
    except torch.cuda.OutOfMemoryError:
        log.warning("out of GPU memory with %d job(s); retrying in smaller batches", len(params))
        torch.cuda.empty_cache()
    results = []
    for job in params:
        resolved = resolve_seeds(job)  # every piece must continue the same seeds
        pieces = split_batch(resolved)
        try:
            parts = [engine.generate_batch([piece], progress, cancelled)[0] for piece in pieces]
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            size = max(piece.batch_size for piece in pieces)
            raise GpuOutOfMemory(
                f"out of GPU memory rendering {job.width}x{job.height} even {size} image(s) at"
                " a time; ask for a smaller size or fewer images, or retry when the GPU is freer",
                "out_of_memory",
                width=job.width,
                height=job.height,
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
