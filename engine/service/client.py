"""The async client of the engine's HTTP API: what the bot (and any script) uses to reach it.

Only aiohttp and the standard library: a bot-only host imports this without torch. Contract and
error meanings: docs/engine-api.md. Connection failures (refused, reset, timed out) are retried
with exponential backoff; a submit only when it carries an idempotency key, so a retry can never
queue the same poster twice.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from engine.service import queue_common

log = logging.getLogger(__name__)

# The states a job ends in; the last event of a job's stream has one of them as its type.
FINAL_STATES = frozenset(state.value for state in queue_common.FINAL_STATES)
BACKOFF_S = 0.5  # first retry delay; doubles on each retry
# An event stream is quiet between progress steps; the server sends a keepalive every 15 s.
EVENTS_READ_TIMEOUT_S = 60.0


class EngineError(Exception):
    """The engine answered with an error (`.status` is its HTTP status; 0 when none). `.code`
    and `.values` are the body's stable reason code and its values ("" and {} when none)."""

    def __init__(
        self, message: str, status: int = 0, code: str = "", values: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.values = values or {}


class EngineBusy(EngineError):
    """The queue is full; try again after `.retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, 429)
        self.retry_after_s = retry_after_s


class EngineRejected(EngineError):
    """The request was invalid (400); `.field` names the offending field."""

    def __init__(
        self, message: str, field: str, code: str = "", values: dict | None = None
    ) -> None:
        super().__init__(message, 400, code, values)
        self.field = field


class DatasetRejected(EngineRejected):
    """A dataset upload with refused files; `.rejections` is `[{"file", "reason"}]`."""

    def __init__(self, message: str, rejections: list[dict[str, str]]) -> None:
        super().__init__(message, "dataset")
        self.rejections = rejections


class EngineUnavailable(EngineError):
    """The engine could not be reached, after the retries."""


_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, asyncio.TimeoutError)


class EngineClient:
    """Async client of one engine service; use `async with` or call `close()`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:7861",
        token: str | None = None,
        timeout_s: float = 30,
        retries: int = 3,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s!r}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> EngineClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No cap on connections: each followed job holds one open event stream, and a capped
            # pool (aiohttp's default is 100) would queue submits behind 200 streams until they
            # time out.
            connector = aiohttp.TCPConnector(limit=0)
            self._session = aiohttp.ClientSession(headers=self._headers, connector=connector)
        return self._session

    # -- the API ---------------------------------------------------------------------------

    async def submit(
        self,
        params: dict[str, Any],
        *,
        user: str,
        priority: str = "user",
        idempotency_key: str | None = None,
        kind: str = "txt2img",
    ) -> dict[str, Any]:
        """Queue a job; returns it (the earlier job for a repeated idempotency key)."""
        body = {
            "kind": kind,
            "params": params,
            "user": user,
            "priority": priority,
            "idempotency_key": idempotency_key,
        }
        return await self._json("POST", "/v1/jobs", body=body, retry=idempotency_key is not None)

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self._json("GET", f"/v1/jobs/{job_id}")

    async def jobs(
        self, user: str | None = None, state: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        query = {"limit": str(limit), **({"user": user} if user else {})}
        query |= {"state": state} if state else {}
        return (await self._json("GET", "/v1/jobs", query=query))["jobs"]

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job (a running one stops between steps); returns it."""
        return await self._json("DELETE", f"/v1/jobs/{job_id}")

    async def output(self, path: str) -> bytes:
        """A result file's bytes (`path` as listed in a job's `outputs`)."""
        return await self._send("GET", f"/v1/outputs/{path}")

    async def png_info(self, png: bytes) -> dict[str, Any]:
        """What WebUI's PNG Info reads in a PNG: `parameters` (`Prompt`, `Negative prompt`, then
        each parameter; empty when it has none) and `items` (every text chunk, a finished
        poster's `poster` JSON among them). EngineRejected: not a PNG."""
        body = {"image": base64.b64encode(png).decode()}
        return await self._json("POST", "/sdapi/v1/png-info", body=body)

    async def finish_poster(
        self, spec: dict[str, Any], *, output: str | None = None, image: bytes | None = None
    ) -> list[dict[str, Any]]:
        """Finished posters of a stored result (`output`, a path from a job's `outputs`) or an
        uploaded picture: `spec` is {title, subtitle, cta, targets, layout, ip}; returns per
        target {name, width, height, dpi, layout, png, svg} (paths for `output()`)."""
        body = dict(spec)
        if output is not None:
            body["output"] = output
        if image is not None:
            body["image"] = base64.b64encode(image).decode()
        return (await self._json("POST", "/v1/posters", body=body))["posters"]

    async def upload_picture(self, data: bytes) -> dict[str, Any]:
        """Keep a picture (PNG, JPEG or WEBP bytes) for later jobs: {"input", "width", "height"};
        the reference goes in a job's `init_images`."""
        body = {"image": base64.b64encode(data).decode()}
        return await self._json("POST", "/v1/inputs", body=body)

    async def controlnet_models(self) -> list[str]:
        """Installed ControlNet models as WebUI lists them ("name [hash]")."""
        return (await self._json("GET", "/controlnet/model_list"))["model_list"]

    async def controlnet_modules(self) -> list[str]:
        """The preprocessors the engine can run now (weight-free ones and installed annotators)."""
        return (await self._json("GET", "/controlnet/module_list"))["module_list"]

    async def models(self) -> list[dict[str, Any]]:
        return (await self._json("GET", "/v1/models"))["models"]

    async def loras(self) -> list[dict[str, Any]]:
        return (await self._json("GET", "/v1/loras"))["loras"]

    async def face_restorers(self) -> list[dict[str, Any]]:
        """The face restorers installed (WebUI's list: `name`, `cmd_dir`)."""
        return await self._json("GET", "/sdapi/v1/face-restorers")

    async def esrgan_models(self) -> list[dict[str, Any]]:
        """ESRGAN-family upscalers installed (WebUI's list: `name`, `path`, `scale`)."""
        return await self._json("GET", "/sdapi/v1/realesrgan-models")

    # -- datasets and LoRA versions (admins; docs/engine-api.md "Training") ----------------------

    async def check_dataset(self, data: bytes, *, ip: str | None = None) -> dict[str, Any]:
        """The report on a dataset zip, keeping nothing: `{"report", "text_zh", "text_en"}`."""
        query = {"ip": ip} if ip else {}
        return await self._json("POST", "/v1/datasets/check", data=data, query=query)

    async def upload_dataset(
        self, data: bytes, *, name: str, ip: str | None = None, replace: bool = False
    ) -> dict[str, Any]:
        """Import a dataset zip as `name`: `{"report", "text_zh", "text_en"}`;
        `DatasetRejected` lists why files were refused (nothing is kept then)."""
        query = {"name": name, "replace": "1" if replace else "0", **({"ip": ip} if ip else {})}
        return await self._json("POST", "/v1/datasets", data=data, query=query, retry=False)

    async def fix_dataset(self, name: str, *, ip: str, fix: str) -> dict[str, Any]:
        """Apply a report's caption fix (`stubs` or `trigger`): `{"changed", "report", ...}`."""
        body = {"ip": ip, "fix": fix}
        return await self._json("POST", f"/v1/datasets/{name}/fix", body=body, retry=False)

    async def start_dataset_session(self, ip: str) -> str:
        """A new chat dataset session for `ip`; returns its id."""
        answer = await self._json("POST", "/v1/dataset-sessions", body={"ip": ip}, retry=False)
        return answer["session"]

    async def add_dataset_file(
        self,
        session: str,
        filename: str,
        data: bytes,
        *,
        caption: str | None = None,
        as_photo: bool = False,
    ) -> dict[str, Any]:
        """Add an image or `.txt` caption to a session: `{"warnings", "images"}`."""
        form = aiohttp.FormData()
        form.add_field("file", data, filename=filename)
        if caption:
            form.add_field("caption", caption)
        form.add_field("as_photo", "1" if as_photo else "0")
        path = f"/v1/dataset-sessions/{session}/files"
        return await self._json("POST", path, data=form, retry=False)

    async def finish_dataset_session(
        self, session: str, name: str, *, replace: bool = False
    ) -> dict[str, Any]:
        """Make the session dataset `name`: `{"report", "text_zh", "text_en"}`."""
        body = {"name": name, "replace": replace}
        path = f"/v1/dataset-sessions/{session}/finish"
        return await self._json("POST", path, body=body, retry=False)

    async def discard_dataset_session(self, session: str) -> None:
        await self._send("DELETE", f"/v1/dataset-sessions/{session}")

    async def versions(self, ip: str | None = None) -> list[dict[str, Any]]:
        """LoRA versions, oldest first, with params, final loss and `promoted`."""
        query = {"ip": ip} if ip else {}
        return (await self._json("GET", "/v1/versions", query=query))["versions"]

    async def promote(self, ip: str, version: str) -> dict[str, Any]:
        """Make a version (`v3` or `dada-v3`) what the IP's posters use; returns it."""
        body = {"ip": ip, "version": version}
        return (await self._json("POST", "/v1/versions/promote", body=body))["version"]

    async def rollback(self, ip: str) -> dict[str, Any]:
        """Go back to the previously promoted version; returns it."""
        return (await self._json("POST", "/v1/versions/rollback", body={"ip": ip}))["version"]

    async def register_lora(self, ip: str, filename: str, data: bytes) -> dict[str, Any]:
        """Register a LoRA `.safetensors` made elsewhere as a new version; returns it."""
        query = {"ip": ip, "filename": filename}
        return await self._json("POST", "/v1/versions", data=data, query=query, retry=False)

    async def export_lora(self, name: str) -> bytes:
        """A version's WebUI-layout `.safetensors` bytes."""
        return await self._send("GET", f"/v1/versions/{name}/file")

    async def health(self) -> dict[str, Any]:
        """`/healthz`'s body, healthy (`ok` true) or not (a 503 is an answer, not an error)."""
        return await self._json("GET", "/healthz", ok=(200, 503))

    async def events(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """The job's events until its final one; reconnects (with backoff) if the stream drops."""
        failures = 0
        while True:
            try:
                async for event in self._event_stream(job_id):
                    failures = 0
                    yield event
                    if event["type"] in FINAL_STATES:
                        return
            except _CONNECTION_ERRORS as exc:
                failures += 1
                if failures > self.retries:
                    raise EngineUnavailable(f"events of job {job_id}: {exc!r}") from exc
                await asyncio.sleep(BACKOFF_S * 2 ** (failures - 1))

    async def wait(self, job_id: str) -> dict[str, Any]:
        """Follow the job's events; returns the finished job."""
        async for event in self.events(job_id):
            if event["type"] in FINAL_STATES:
                return event["job"]
        raise EngineError(f"events of job {job_id} ended without a final event")

    # -- plumbing ----------------------------------------------------------------------------

    async def _event_stream(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        """One connection's events (`data:` lines of the server-sent event stream)."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout_s, sock_read=EVENTS_READ_TIMEOUT_S
        )
        url = f"{self.base_url}/v1/jobs/{job_id}/events"
        async with self._http().get(url, timeout=timeout) as response:
            if response.status != 200:
                raise _error(response.status, await response.text(), response.headers)
            async for raw in response.content:
                line = raw.decode().strip()
                if line.startswith("data:"):
                    yield json.loads(line[5:])

    async def _json(self, method: str, path: str, **options: Any) -> Any:
        """`_send`, with the answer parsed as JSON."""
        return json.loads(await self._send(method, path, **options))

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        query: dict[str, str] | None = None,
        retry: bool = True,
        ok: tuple[int, ...] = (200, 201),
        data: bytes | aiohttp.FormData | None = None,
    ) -> bytes:
        """One request (a JSON `body`, or raw bytes or a form as `data`), retried on connection
        errors; raises the matching EngineError."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        attempts = 1 + (self.retries if retry else 0)
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._http().request(
                    method,
                    self.base_url + path,
                    json=body,
                    data=data,
                    params=query,
                    timeout=timeout,
                ) as response:
                    data = await response.read()
                    if response.status not in ok:
                        text = data.decode(errors="replace")
                        raise _error(response.status, text, response.headers)
                    return data
            except _CONNECTION_ERRORS as exc:
                if attempt == attempts:
                    raise EngineUnavailable(
                        f"{method} {path}: engine at {self.base_url} unreachable after"
                        f" {attempt} attempt(s): {exc!r}"
                    ) from exc
                delay = BACKOFF_S * 2 ** (attempt - 1)
                log.warning("%s %s failed (%r); retrying in %.1f s", method, path, exc, delay)
                await asyncio.sleep(delay)


def _error(status: int, text: str, headers: Any) -> EngineError:
    """The EngineError for an error response (`{"error": "<field>: <message>", "field",
    "code", "values"}`)."""
    try:
        body = json.loads(text)
        message = str(body.get("error", text))
    except (json.JSONDecodeError, AttributeError):
        body, message = {}, text
    code, values = str(body.get("code") or ""), body.get("values") or {}
    if status == 429:
        retry_after = body.get("retry_after_s") or headers.get("Retry-After") or 1
        return EngineBusy(message, int(retry_after))
    if status == 400 and body.get("rejections") is not None:
        return DatasetRejected(message, body["rejections"])
    if status == 400:
        field = body.get("field") or message.split(":", 1)[0].strip()
        return EngineRejected(message, field, code, values)
    return EngineError(f"HTTP {status}: {message}", status, code, values)
