"""WebUI's Extras routes: upscale and restore faces on one picture or a batch, and the lists of
face restorers and ESRGAN-family models.

Each picture is one "extras" job through `Service.submit`, like every job; the route waits for
it as `/sdapi/v1/txt2img` does (`webui.wait_finished`, `webui.read_outputs`).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from engine.diffusion.extras import FIELDS
from engine.diffusion.faces import restorer_names
from engine.service.http import blocking, error_response, read_json, service
from engine.service.queue_common import State
from engine.service.webui import read_outputs, wait_finished, webui_user
from posterbot.errors import Refusal

# WebUI request fields of its legacy pipeline and UI that change nothing here, taken and left.
WEBUI_IGNORED = ("show_extras_results", "upscale_first", "codeformer_weight", "model")
MAX_BATCH_IMAGES = 16  # extra-batch-images: one request, at most this many jobs
_SCALE_IN_NAME = re.compile(r"(?:^|[^0-9])(\d)x|x(\d)(?:[^0-9]|$)", re.IGNORECASE)


def extras_request(body: dict[str, Any], image: Any) -> dict[str, Any]:
    """A WebUI Extras body as our "extras" params; CodeFormer refused by name."""
    if body.get("codeformer_visibility") not in (None, 0, 0.0):
        raise Refusal(
            "codeformer_visibility",
            "CodeFormer is not supported: its licence forbids commercial use; use "
            "gfpgan_visibility (GFPGAN or RestoreFormer)",
            "codeformer_refused",
        )
    known = {k: v for k, v in body.items() if k in FIELDS and k != "image" and v is not None}
    unknown = set(body) - {*FIELDS, *WEBUI_IGNORED, "codeformer_visibility", "imageList"}
    if unknown:
        field = sorted(unknown)[0]
        raise Refusal(field, "not an Extras field posterbot's engine knows")
    return {**known, "image": image}


async def run_extras(request: web.Request, params: dict[str, Any]) -> dict[str, Any]:
    """Queue one extras job and wait for it; the job as JSON."""
    svc = service(request)
    queued, _ = await blocking(svc.submit, "extras", params, webui_user(request))
    try:
        return await wait_finished(svc, queued.id)
    except asyncio.CancelledError:  # the client hung up: nobody will see the picture
        await blocking(svc.queue.cancel, queued.id)
        raise


def failed(job: dict[str, Any]) -> web.Response:
    """A job that did not finish: 400 when the worker refused it (a file it could not load),
    else 500, with the job's error."""
    status = 400 if job["state"] == State.FAILED.value else 500
    message = f"job: {job['state']}: {job['error'] or 'no picture'}"
    return error_response(status, message, code=job["error_code"])


async def webui_extra_single_image(request: web.Request) -> web.Response:
    """WebUI's extra-single-image: {"html_info", "image"}."""
    body = await read_json(request)
    job = await run_extras(request, extras_request(body, body.get("image")))
    if job["state"] != State.DONE.value:
        return failed(job)
    (image,) = await blocking(read_outputs, service(request).config.outputs_dir, job["outputs"])
    return web.json_response({"html_info": job["info"]["html_info"], "image": image})


async def webui_extra_batch_images(request: web.Request) -> web.Response:
    """WebUI's extra-batch-images: {"html_info", "images"}, pictures from `imageList`
    ([{"data": base64, "name": ...}])."""
    body = await read_json(request)
    pictures = body.get("imageList")
    if not isinstance(pictures, list) or not pictures or len(pictures) > MAX_BATCH_IMAGES:
        raise Refusal("imageList", f"must list 1..{MAX_BATCH_IMAGES} pictures")
    for index, picture in enumerate(pictures):
        if not isinstance(picture, dict):
            raise Refusal(f"imageList[{index}]", 'must be {"data": base64, "name": ...}')
    jobs = []
    for index, picture in enumerate(pictures):
        params = extras_request(body, picture.get("data"))
        try:
            jobs.append(await run_extras(request, params))
        except Refusal as exc:  # a bad picture: say which one
            if exc.field != "image":
                raise
            detail = str(exc).removeprefix("image: ")
            raise Refusal(f"imageList[{index}].data", detail, exc.code, **exc.values) from None
        if jobs[-1]["state"] != State.DONE.value:
            return failed(jobs[-1])
    root = service(request).config.outputs_dir
    images = await blocking(read_outputs, root, [job["outputs"][0] for job in jobs])
    return web.json_response({"html_info": jobs[0]["info"]["html_info"], "images": images})


async def webui_face_restorers(request: web.Request) -> web.Response:
    """The face restorers installed in models/GFPGAN, in WebUI's shape."""
    folder = service(request).config.face_restorers_dir
    names = await blocking(restorer_names, folder)
    return web.json_response([{"name": name, "cmd_dir": "models/GFPGAN"} for name in names])


async def webui_realesrgan_models(request: web.Request) -> web.Response:
    """ESRGAN-family files in models/ESRGAN, their scale read from the name (4x-UltraSharp,
    RealESRGAN_x2plus; 4, the usual, when it does not say)."""
    files = await blocking(service(request).registry.upscalers)
    return web.json_response(
        [
            {"name": name, "path": f"models/ESRGAN/{path.name}", "scale": scale_in_name(name)}
            for name, path in files.items()
        ]
    )


def scale_in_name(name: str) -> int:
    match = _SCALE_IN_NAME.search(name)
    return int(match.group(1) or match.group(2)) if match else 4
