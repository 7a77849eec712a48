"""Our `/v1` API: jobs, their event streams, outputs, models, LoRAs, health.

Thin views over `Service` (docs/engine-api.md is the contract); every blocking call runs in
`blocking`.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.diffusion.params import check_range
from engine.service.finishing import check_spec, finish
from engine.service.http import blocking, read_json, service
from engine.service.inputs import decode_base64, picture_size, read_output, store_picture
from engine.service.kinds import job_kind
from engine.service.queue_common import FINAL_STATES, Priority, State
from engine.service.shared_files import ensure_output
from posterbot.errors import Refusal

KEEPALIVE_S = 15.0  # an idle event stream sends a comment this often so proxies keep it open
FINAL_EVENTS = frozenset(state.value for state in FINAL_STATES)  # the last event of a stream
MAX_LIST_LIMIT = 500  # GET /v1/jobs?limit=: a page, not a dump of the database
PRIORITIES = {"admin": Priority.ADMIN, "user": Priority.USER, "training": Priority.TRAINING}


async def submit_job(request: web.Request) -> web.Response:
    """Queue a job: 201 (200 for a repeated idempotency key)."""
    svc = service(request)
    body = await read_json(request)
    kind = body.get("kind", "txt2img")
    job_kind(kind)
    params = body.get("params")
    if not isinstance(params, dict):
        raise Refusal("params", f"required, a JSON object of {kind} fields")
    user = body.get("user")
    if not isinstance(user, str) or not user.strip():
        raise ValueError("user: required, e.g. tg:123456")
    priority = body.get("priority", "user")
    if not isinstance(priority, str) or priority not in PRIORITIES:
        raise ValueError(f"priority: {priority!r} is not one of {', '.join(PRIORITIES)}")
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError("idempotency_key: must be a non-empty string or null")
    job, created = await blocking(svc.submit, kind, params, user, PRIORITIES[priority], key)
    return web.json_response(await blocking(svc.job_json, job), status=201 if created else 200)


async def list_jobs(request: web.Request) -> web.Response:
    """Jobs newest first, filtered by user and state."""
    svc = service(request)
    query = request.query
    state = query.get("state") or None
    if state is not None and state not in {s.value for s in State}:
        raise ValueError(f"state: {state!r} is not one of {', '.join(s.value for s in State)}")
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        raise ValueError(f"limit: must be a whole number, not {query['limit']!r}") from None
    check_range("limit", limit, 1, MAX_LIST_LIMIT)

    def page() -> list[dict[str, Any]]:
        jobs = svc.queue.list_jobs(user=query.get("user") or None, state=state, limit=limit)
        return [svc.job_json(job) for job in jobs]

    return web.json_response({"jobs": await blocking(page)})


async def get_job(request: web.Request) -> web.Response:
    """One job."""
    svc = service(request)
    job = await blocking(svc.queue.get, request.match_info["job_id"])
    return web.json_response(await blocking(svc.job_json, job))


async def cancel_job(request: web.Request) -> web.Response:
    """Cancel: a queued job at once, a running one between denoising steps."""
    svc = service(request)
    job = await blocking(svc.queue.cancel, request.match_info["job_id"])
    return web.json_response(await blocking(svc.job_json, job))


async def job_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events of a job until it ends: queued, progress..., then the final state."""
    svc = service(request)
    job_id = request.match_info["job_id"]
    await blocking(svc.queue.get, job_id)  # 404 before the stream starts
    stream = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await stream.prepare(request)
    with svc.watcher.follow(job_id) as events:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), KEEPALIVE_S)
            except TimeoutError:
                await stream.write(b": keepalive\n\n")
                continue
            data = json.dumps(event)
            await stream.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
            if event["type"] in FINAL_EVENTS:
                return stream


OUTPUT_TYPES = {".png": "image/png", ".svg": "image/svg+xml"}  # results and posters' SVGs


async def get_output(request: web.Request) -> web.StreamResponse:
    """A result PNG or a poster's SVG; 404 for anything outside the outputs folder."""
    config = service(request).config
    await blocking(ensure_output, config, request.match_info["path"])  # a remote worker's
    root = config.outputs_dir.resolve()
    path = (root / request.match_info["path"]).resolve()
    kind = OUTPUT_TYPES.get(path.suffix.lower())
    if not path.is_relative_to(root) or kind is None or not path.is_file():
        raise web.HTTPNotFound(text=f"path: no output {request.match_info['path']!r}")
    return web.FileResponse(path, headers={"Content-Type": kind})


async def finish_poster(request: web.Request) -> web.Response:
    """Lay copy out on a picture (a stored output, or an upload) at each size asked for:
    201 with the posters' PNG and SVG paths. No generation: a new title, layout or size of the
    same picture takes a fraction of a second."""
    svc = service(request)
    body = await read_json(request)
    picture = body.pop("output", None)
    upload = body.pop("image", None)
    if (picture is None) == (upload is None):
        raise Refusal("output", "give either output (a result's path) or image (base64)")
    spec = check_spec(body, svc.config)
    if picture is not None:
        data = await blocking(read_output, svc.config, picture, "output")
        label = Path(str(picture)).stem
    else:
        data, label = decode_base64(upload, "image"), "upload"
    posters = await blocking(finish, svc.config, data, spec, label)
    return web.json_response({"posters": posters}, status=201)


async def upload_picture(request: web.Request) -> web.Response:
    """Keep a picture for later jobs (a photo sent in chat, replied to later): 201 with its
    `input:<sha256>` reference and size. Checked as every picture in a job is."""
    svc = service(request)
    body = await read_json(request)
    reference = await blocking(store_picture, svc.config, body.get("image"), "image")
    width, height = await blocking(picture_size, svc.config, reference)
    return web.json_response({"input": reference, "width": width, "height": height}, status=201)


async def list_models(request: web.Request) -> web.Response:
    """Installed base models with WebUI's short hashes."""
    return web.json_response({"models": await blocking(service(request).models)})


async def list_loras(request: web.Request) -> web.Response:
    """Installed LoRAs with WebUI's addnet hashes."""
    return web.json_response({"loras": await blocking(service(request).loras)})


async def healthz(request: web.Request) -> web.Response:
    """200 when every worker process is alive, else 503; with the queue depth."""
    ok, body = await blocking(service(request).health)
    return web.json_response(body, status=200 if ok else 503)
