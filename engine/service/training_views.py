"""The engine's HTTP routes for LoRA training: datasets, chat dataset sessions, LoRA versions.

Thin shells over `engine.training` (intake, report, sessions, versions); like the rest of the
service they never import torch and run blocking work in `blocking`. (`train` and `xyz` jobs go
through POST /v1/jobs like any job kind: `engine.service.kinds`.) Uploads are read as a stream
with a limit of their own (not `engine.max_body_bytes`), written to a scratch file and handed to
the same intake the CLI uses. docs/engine-api.md is the contract.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.service.http import blocking, error_response, read_json, service
from engine.service.state import Service
from engine.training import intake, sessions
from engine.training.layout import DatasetError, check_name, suffix_kind
from engine.training.report import DatasetReport, analyse, fix_captions
from engine.training.versions import Versions, version_name

MAX_ZIP_BYTES = 50 * 2**20  # Telegram's document limit: the largest zip a chat can send
MAX_SESSION_FILE_BYTES = 20 * 2**20  # the Bot API's getFile limit: what the bot can download
MAX_LORA_UPLOAD_BYTES = 2 * 2**30  # as versions.MAX_LORA_BYTES: the largest SDXL LoRAs ~1.7 GB
UPLOAD_CHUNK = 1 << 16
MAX_FIELD_BYTES = intake.MAX_CAPTION_BYTES  # a caption is one line of tags
SESSION_ID = re.compile(r"[\w][\w.-]{0,80}")  # start_session's folder names: `<ip>-<random>`
FIXES = ("stubs", "trigger")  # the report's offered caption fixes (report.fix_captions)


class UploadTooLarge(web.HTTPClientError):
    """413 with the limit's own reason (the middleware keeps this text)."""

    status_code = 413


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


def report_json(svc: Service, report: DatasetReport) -> dict[str, Any]:
    """The report as JSON plus its Chinese chat text."""
    min_side = svc.config.training.min_image_side
    return {
        "report": report.to_dict(min_side),
        "text_zh": report.to_text(min_side, "zh"),
        "text_en": report.to_text(min_side, "en"),
    }


def rejected(exc: DatasetError) -> web.Response:
    """400 listing every rejected file and why."""
    rejections = [asdict(r) for r in exc.rejections]  # file, reason, reason_zh, code
    return error_response(
        400,
        str(exc),
        field="dataset",
        code="dataset_rejected",
        values={"count": len(rejections)},
        rejections=rejections,
    )


def session_folder(svc: Service, session: str) -> Path:
    """The folder of a chat dataset session (404 for an unknown or malformed id)."""
    folder = svc.config.datasets_dir / sessions.SESSIONS_FOLDER / session
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
        report = await blocking(intake.check_dataset, upload, svc.config, trigger)
    return web.json_response(report_json(svc, report))


async def upload_dataset(request: web.Request) -> web.Response:
    """Import an uploaded zip as datasets/<name>: 201 with the report, or 400 with rejections."""
    svc = service(request)
    name = check_name(query_name(request, "name"))
    trigger = trigger_of(svc, request.query.get("ip"))
    replace = request.query.get("replace", "") in ("1", "true")
    with tempfile.TemporaryDirectory(dir=svc.config.data_dir) as scratch:
        upload = Path(scratch) / "upload.zip"
        await read_upload(request, MAX_ZIP_BYTES, "Telegram's document limit", upload)
        try:
            report = await blocking(
                intake.import_dataset, upload, name, svc.config, trigger, replace
            )
        except DatasetError as exc:
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
    name = check_name(request.match_info["name"])
    folder = svc.config.datasets_dir / name
    if not folder.is_dir():
        raise web.HTTPNotFound(text=f"name: no dataset {name!r}")
    changed = await blocking(fix_captions, folder, svc.config, ip.trigger, fix)
    report = await blocking(analyse, folder, svc.config, ip.trigger)
    return web.json_response({"changed": changed, **report_json(svc, report)})


async def start_session(request: web.Request) -> web.Response:
    """Start a chat dataset session for an IP: 201 `{"session"}`."""
    svc = service(request)
    body = await read_json(request)
    ip = svc.config.find_ip(str(body.get("ip") or ""))
    folder = await blocking(sessions.start_session, svc.config, ip.name)
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
    add = sessions.add_session_file
    as_photo = form.get("as_photo", "") in ("1", "true")
    try:
        warnings = await blocking(
            add, folder, form["filename"], data, svc.config, form.get("caption"), as_photo
        )
    except DatasetError as exc:
        return rejected(exc)
    images = sum(1 for p in folder.iterdir() if suffix_kind(p.name) == "image")
    return web.json_response(
        {
            "warnings": [warning["text_en"] for warning in warnings],
            "warnings_zh": [warning["text_zh"] for warning in warnings],
            "warning_codes": [
                {"code": warning["code"], "values": warning["values"]} for warning in warnings
            ],
            "images": images,
        }
    )


async def finish_session(request: web.Request) -> web.Response:
    """Lay a session out as datasets/<name>: 201 with the report; 400 with rejections (the
    session stays, so the missing files can still be added)."""
    svc = service(request)
    folder = session_folder(svc, request.match_info["session"])
    body = await read_json(request)
    name = check_name(str(body.get("name") or ""))
    trigger = trigger_of(svc, folder.name.rsplit("-", 1)[0])
    replace = bool(body.get("replace", False))
    try:
        report = await blocking(sessions.finish_session, folder, name, svc.config, trigger, replace)
    except DatasetError as exc:
        return rejected(exc)
    return web.json_response(report_json(svc, report), status=201)


async def discard_session(request: web.Request) -> web.Response:
    """Throw a session's files away."""
    svc = service(request)
    folder = session_folder(svc, request.match_info["session"])
    await blocking(sessions.discard_session, folder)
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
