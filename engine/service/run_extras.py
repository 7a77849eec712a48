"""The runner of "extras" jobs (WebUI's Extras tab: upscaling, face restoration) on one stored
picture each: checked again, processed, saved as `outputs/extras/YYYY-MM-DD/NNNNN-extras.png`
with WebUI's `postprocessing` text, and completed with the size and that text as its info.
No diffusion model is used; the worker's warm Engine stays as it is.
"""

from __future__ import annotations

from engine.diffusion import infotext
from engine.diffusion.extras import ExtrasParams, extras_params, postprocess
from engine.diffusion.faces import detector_file, find_restorer
from engine.diffusion.outputs import save_png
from engine.diffusion.registry import Registry
from engine.service.inputs import open_picture
from engine.service.queue_common import Job
from engine.service.worker import StepGate, Worker

POSTPROCESSING_KEY = "postprocessing"  # the PNG text chunk WebUI's Extras writes
STAGES = 2  # progress: the picture read, then processed


def run_extras(worker: Worker, jobs: list[Job]) -> None:
    """Process each claimed job on its own and record how it ended."""
    for job in jobs:
        worker.guarded([job], lambda job=job: process(worker, job))


def process(worker: Worker, job: Job) -> None:
    config = worker.config
    gate = StepGate(worker, [job])
    # 1. check the params again and find the files they name
    params: ExtrasParams = extras_params(job.params)
    upscalers = Registry(config).upscalers()
    restorer = None
    if params.restores_faces:
        restorer = find_restorer(params.face_restoration_model, config.face_restorers_dir)
    picture = open_picture(config, params.image)
    gate.progress("extras", 1, STAGES, force=True)
    # 2. upscale and restore
    result, info = postprocess(
        params, picture, upscalers, restorer, detector_file(config.face_restorers_dir)
    )
    # 3. save and complete (a lost lease keeps no file)
    path = save_png(
        config.outputs_dir / "extras",
        "extras",
        infotext.png_bytes(result, info, POSTPROCESSING_KEY),
    )
    relative = path.relative_to(config.outputs_dir).as_posix()
    done = {"html_info": info, "width": result.width, "height": result.height}
    if job.id not in worker.heartbeat.beat() or not worker.complete(job, [relative], done):
        path.unlink(missing_ok=True)
