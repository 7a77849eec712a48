"""The engine's HTTP routes for LoRA training: datasets, chat dataset sessions, LoRA versions,
and the checks of `train` and `xyz` jobs submitted to POST /v1/jobs.

Thin shells over `engine.training` (dataset intake and report, versions) and `engine.grid`; like
the rest of the service they never import torch and run blocking work in `blocking`. Uploads
are read as a stream with a limit of their own (not `engine.max_body_bytes`), written to a
scratch file and handed to the same intake the CLI uses. docs/engine-api.md is the contract.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.grid import xyz_request
from engine.queue import Job, Priority
from engine.server import Service, blocking, read_json, service
from engine.training import dataset as datasets
from engine.training.params import check_train_request
from engine.training.versions import Versions, version_name

MAX_ZIP_BYTES = 50 * 2**20  # Telegram's document limit: the largest zip a chat can send
MAX_SESSION_FILE_BYTES = 20 * 2**20  # the Bot API's getFile limit: what the bot can download
MAX_LORA_UPLOAD_BYTES = 2 * 2**30  # as versions.MAX_LORA_BYTES: the largest SDXL LoRAs ~1.7 GB
UPLOAD_CHUNK = 1 << 16
MAX_FIELD_BYTES = datasets.MAX_CAPTION_BYTES  # a caption is one line of tags
SESSION_ID = re.compile(r"[\w][\w.-]{0,80}")  # start_session's folder names: `<ip>-<random>`
FIXES = ("stubs", "trigger")  # the report's offered caption fixes (dataset.fix_captions)


class UploadTooLarge(web.HTTPClientError):
    """413 with the limit's own reason (the middleware keeps this text)."""

    status_code = 413


# -- train and xyz jobs (POST /v1/jobs) --------------------------------------------------------


def check_job(svc: Service, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """A `train` or `xyz` job's params as the worker will run them (ValueError naming a field)."""
    if kind == "train":
        return check_train_request(svc.config, params).to_dict()
    axes = params.get("axes")
    if not isinstance(axes, dict) or not axes:
        raise ValueError('axes: required, e.g. {"versions": "v1,v2", "weights": "0.6,1"}')
    unknown = set(params) - {"ip", "axes", "prompt"}
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown xyz field (known: ip, axes, prompt)")
    request = xyz_request(svc.config, str(params.get("ip") or ""), axes, params.get("prompt"))
    for name in request["axes"].get("versions", "").split(","):
        if name:
            svc.registry.lora(name)  # 400 now rather than a failed grid later
    return request


def submit_other(
    svc: Service,
    kind: str,
    params: dict[str, Any],
    user: str,
    priority: Priority,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    """Check and queue a `train` or `xyz` job; returns the job and whether it is new."""
    checked = check_job(svc, kind, params)
    before = time.time()
    job = svc.queue.submit(kind, checked, user, priority=priority, idempotency_key=idempotency_key)
    return job, job.created_at >= before


# -- helpers -----------------------------------------------------------------------------------


async def copy_limited(read, target: Path, limit: int, reason: str) -> int:
    """Copy chunks from `read(n)` to `target`, refusing past `limit` bytes with `reason`."""
    size = 0
    with open(target, "wb") as file:
        while chunk := await read(UPLOAD_CHUNK):
            size += len(chunk)
            if size > limit:
                raise UploadTooLarge(text=f"body: larger than {limit} bytes ({reason})")
            file.write(chunk)
    return size


async def read_upload(request: web.Request, limit: int, reason: str, target: Path) -> None:
    """Stream the request body to `target` (at most `limit` bytes, for `reason`)."""
    if not await copy_limited(request.content.read, target, limit, reason):
        raise ValueError("body: empty; send the file's bytes as the request body")


async def read_form(request: web.Request, limit: int, reason: str, target: Path) -> dict:
    """A multipart upload: the `file` part streamed to `target` (at most `limit` bytes), the
    other parts as short texts; returns those texts and the file's `filename`."""
    fields: dict[str, str] = {}
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if part.name == "file":
            fields["filename"] = part.filename or ""
            await copy_limited(part.read_chunk, target, limit, reason)
        else:
            scratch = target.with_name(f"field-{len(fields)}")
            await copy_limited(part.read_chunk, scratch, MAX_FIELD_BYTES, "a caption or a flag")
            fields[part.name or ""] = scratch.read_text("utf-8", errors="replace")
    if "filename" not in fields:
        raise ValueError("file: required, a multipart part named file")
    return fields


def query_name(request: web.Request, field: str) -> str:
    value = request.query.get(field, "").strip()
    if not value:
        raise ValueError(f"{field}: required in the query string")
    return value


def trigger_of(svc: Service, ip: str | None) -> str:
    """The trigger word captions should carry ("" when no IP is named)."""
    return svc.config.find_ip(ip).trigger if ip else ""


def report_json(svc: Service, report: datasets.DatasetReport) -> dict[str, Any]:
    """The report as JSON plus its Chinese chat text."""
    min_side = svc.config.training.min_image_side
    return {
        "report": report.to_dict(min_side),
        "text_zh": report.to_text(min_side, "zh"),
        "text_en": report.to_text(min_side, "en"),
    }


def rejected(exc: datasets.DatasetError) -> web.Response:
    """400 listing every rejected file and why."""
    rejections = [asdict(r) for r in exc.rejections]  # file, reason, reason_zh
    return web.json_response({"error": str(exc), "rejections": rejections}, status=400)


def session_folder(svc: Service, session: str) -> Path:
    """The folder of a chat dataset session (404 for an unknown or malformed id)."""
    folder = svc.config.datasets_dir / datasets.SESSIONS_FOLDER / session
    if not SESSION_ID.fullmatch(session) or not folder.is_dir():
        raise web.HTTPNotFound(text=f"session: no dataset session {session!r}")
    return folder


# -- datasets ----------------------------------------------------------------------------------


async def check_dataset(request: web.Request) -> web.Response:
    """Report on an uploaded zip without keeping it; rejections are part of the report."""
    svc = service(request)
    trigger = trigger_of(svc, request.query.get("ip"))
    with tempfile.TemporaryDirectory(dir=svc.config.data_dir) as scratch:
        upload = Path(scratch) / "upload.zip"
        await read_upload(request, MAX_ZIP_BYTES, "Telegram's document limit", upload)
        report = await blocking(datasets.check_dataset, upload, svc.config, trigger)
    return web.json_response(report_json(svc, report))


async def upload_dataset(request: web.Request) -> web.Response:
    """Import an uploaded zip as datasets/<name>: 201 with the report, or 400 with rejections."""
    svc = service(request)
    name = datasets.check_name(query_name(request, "name"))
    trigger = trigger_of(svc, request.query.get("ip"))
    replace = request.query.get("replace", "") in ("1", "true")
    with tempfile.TemporaryDirectory(dir=svc.config.data_dir) as scratch:
        upload = Path(scratch) / "upload.zip"
        await read_upload(request, MAX_ZIP_BYTES, "Telegram's document limit", upload)
        try:
            report = await blocking(
                datasets.import_dataset, upload, name, svc.config, trigger, replace
            )
        except datasets.DatasetError as exc:
            return rejected(exc)
    return web.json_response(report_json(svc, report), status=201)


async def fix_dataset(request: web.Request) -> web.Response:
    """Apply an offered caption fix (`stubs` or `trigger`); answers the new report."""
    svc = service(request)
    body = await read_json(request)
    fix = body.get("fix")
    if fix not in FIXES:
        raise ValueError(f"fix: {fix!r} is not one of {', '.join(FIXES)}")
    ip = svc.config.find_ip(str(body.get("ip") or ""))
    name = datasets.check_name(request.match_info["name"])
    folder = svc.config.datasets_dir / name
    if not folder.is_dir():
        raise web.HTTPNotFound(text=f"name: no dataset {name!r}")
    changed = await blocking(datasets.fix_captions, folder, svc.config, ip.trigger, fix)
    report = await blocking(datasets.analyse, folder, svc.config, ip.trigger)
    return web.json_response({"changed": changed, **report_json(svc, report)})


async def start_session(request: web.Request) -> web.Response:
    """Start a chat dataset session for an IP: 201 `{"session"}`."""
    svc = service(request)
    body = await read_json(request)
    ip = svc.config.find_ip(str(body.get("ip") or ""))
    folder = await blocking(datasets.start_session, svc.config, ip.name)
    return web.json_response({"session": folder.name, "ip": ip.name}, status=201)


async def add_session_file(request: web.Request) -> web.Response:
    """Add one image or .txt caption to a session (multipart: `file`, optional `caption` and
    `as_photo`); answers warnings for the user and the session's image count."""
    svc = service(request)
    folder = session_folder(svc, request.match_info["session"])
    with tempfile.TemporaryDirectory(dir=svc.config.data_dir) as scratch:
        upload = Path(scratch) / "upload"
        form = await read_form(
            request, MAX_SESSION_FILE_BYTES, "the Bot API's getFile limit", upload
        )
        data = upload.read_bytes()
    add = datasets.add_session_file
    as_photo = form.get("as_photo", "") in ("1", "true")
    try:
        warnings = await blocking(
            add, folder, form["filename"], data, svc.config, form.get("caption"), as_photo
        )
    except datasets.DatasetError as exc:
        return rejected(exc)
    images = sum(1 for p in folder.iterdir() if datasets.suffix_kind(p.name) == "image")
    return web.json_response({"warnings": warnings, "images": images})


async def finish_session(request: web.Request) -> web.Response:
    """Lay a session out as datasets/<name>: 201 with the report; 400 with rejections (the
    session stays, so the missing files can still be added)."""
    svc = service(request)
    folder = session_folder(svc, request.match_info["session"])
    body = await read_json(request)
    name = datasets.check_name(str(body.get("name") or ""))
    trigger = trigger_of(svc, folder.name.rsplit("-", 1)[0])
    replace = bool(body.get("replace", False))
    try:
        report = await blocking(datasets.finish_session, folder, name, svc.config, trigger, replace)
    except datasets.DatasetError as exc:
        return rejected(exc)
    return web.json_response(report_json(svc, report), status=201)


async def discard_session(request: web.Request) -> web.Response:
    """Throw a session's files away."""
    svc = service(request)
    folder = session_folder(svc, request.match_info["session"])
    await blocking(datasets.discard_session, folder)
    return web.json_response({"discarded": folder.name})


# -- LoRA versions -----------------------------------------------------------------------------


async def list_versions(request: web.Request) -> web.Response:
    """Versions oldest first, with parameters, final loss and which one posters use."""
    versions = Versions(service(request).config)
    return web.json_response({"versions": await blocking(versions.list, request.query.get("ip"))})


async def promote_version(request: web.Request) -> web.Response:
    """Make a version what the IP's posters use (`{"ip", "version": "v3" | "dada-v3"}`)."""
    svc = service(request)
    body = await read_json(request)
    ip = svc.config.find_ip(str(body.get("ip") or ""))
    name = version_name(ip.name, str(body.get("version") or ""))
    version = await blocking(Versions(svc.config).promote, ip, name)
    return web.json_response({"version": version, "lora": ip.lora})


async def rollback_version(request: web.Request) -> web.Response:
    """Go back to the version promoted before the current one (`{"ip"}`)."""
    svc = service(request)
    body = await read_json(request)
    ip = svc.config.find_ip(str(body.get("ip") or ""))
    version = await blocking(Versions(svc.config).rollback, ip)
    return web.json_response({"version": version, "lora": ip.lora})


async def register_version(request: web.Request) -> web.Response:
    """Register an uploaded LoRA `.safetensors` (the body) as a new version of `?ip=`."""
    svc = service(request)
    ip = svc.config.find_ip(query_name(request, "ip"))
    filename = Path(query_name(request, "filename")).name
    with tempfile.TemporaryDirectory(dir=svc.config.data_dir) as scratch:
        upload = Path(scratch) / filename
        if upload.suffix.lower() == ".safetensors":  # pickles are refused unread, by name
            await read_upload(request, MAX_LORA_UPLOAD_BYTES, "larger than any LoRA", upload)
        else:
            upload.touch()
        version = await blocking(Versions(svc.config).register, ip, upload, filename)
    return web.json_response(version, status=201)


async def export_version(request: web.Request) -> web.StreamResponse:
    """A version's WebUI-layout `.safetensors` file."""
    svc = service(request)
    name = request.match_info["name"]
    path = await blocking(Versions(svc.config).export, name)
    disposition = f'attachment; filename="{path.name}"'
    return web.FileResponse(
        path,
        headers={"Content-Type": "application/octet-stream", "Content-Disposition": disposition},
    )


def add_routes(app: web.Application) -> None:
    """Register the dataset and version routes on the service's application."""
    app.router.add_post("/v1/datasets/check", check_dataset)
    app.router.add_post("/v1/datasets", upload_dataset)
    app.router.add_post("/v1/datasets/{name}/fix", fix_dataset)
    app.router.add_post("/v1/dataset-sessions", start_session)
    app.router.add_post("/v1/dataset-sessions/{session}/files", add_session_file)
    app.router.add_post("/v1/dataset-sessions/{session}/finish", finish_session)
    app.router.add_delete("/v1/dataset-sessions/{session}", discard_session)
    app.router.add_get("/v1/versions", list_versions)
    app.router.add_post("/v1/versions", register_version)
    app.router.add_post("/v1/versions/promote", promote_version)
    app.router.add_post("/v1/versions/rollback", rollback_version)
    app.router.add_get("/v1/versions/{name}/file", export_version)
