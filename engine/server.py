"""The engine's HTTP service (aiohttp): our `/v1` API and a WebUI-compatible `/sdapi/v1` subset.

Both APIs put work into the same durable queue (`engine.queue`); worker processes
(`engine.worker.Supervisor`) take it from there. Handlers check requests with the same
`engine.params.from_request` the workers use, so a bad field is a 400 naming it, not a failed job
later. They never import torch, and run every blocking queue call in `asyncio.to_thread` so one
slow SQLite commit never stalls the event loop. Event streams and waiting WebUI requests share
one `JobWatcher` that reads every followed job in one query per tick. `running_service` starts
and stops the whole service inside another program's event loop (`posterbot run`); `serve` runs
it alone. docs/engine-api.md is the contract.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import ipaddress
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

from engine import infotext
from engine.hires import upscaler_names
from engine.params import from_request
from engine.queue import FINISHED_STATES, JobNotFound, JobQueue, Priority, QueueFull, State
from engine.queue import Job as QueuedJob
from engine.registry import Registry
from engine.samplers import sampler_names
from engine.worker import Supervisor, batch_key, open_queue, visible_gpu_count, worker_devices
from posterbot.config import Config

log = logging.getLogger(__name__)

TOKEN_ENV = "POSTERBOT_ENGINE_TOKEN"  # bearer token for /v1 and /metrics
API_AUTH_ENV = "POSTERBOT_API_AUTH"  # user:pass for /sdapi/v1, like WebUI's --api-auth
EVENT_POLL_S = 0.25  # how often the watcher re-reads the followed jobs: progress is written ~2/s
KEEPALIVE_S = 15.0  # an idle event stream sends a comment this often so proxies keep it open
# When the service stops, open event streams and waiting WebUI requests get this long to end;
# then they are cut (event clients reconnect to the next service; the job stays queued).
SHUTDOWN_GRACE_S = 3.0
FINAL_EVENTS = frozenset(state.value for state in FINISHED_STATES)  # the last event of a stream
WEBUI_USER = "webui"  # queue user of /sdapi requests (plus the basic-auth name, if any)
MAX_LIST_LIMIT = 500  # GET /v1/jobs?limit=: a page, not a dump of the database
HISTOGRAM_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)  # poster ~10 s, training ~h
PRIORITIES = {"admin": Priority.ADMIN, "user": Priority.USER, "training": Priority.TRAINING}
KINDS = ("txt2img", "train", "xyz")  # train and xyz: engine/server_training.py


class Service:
    """What the handlers share: config, queue, registry, workers, credentials, WebUI options."""

    def __init__(
        self,
        config: Config,
        queue: JobQueue,
        supervisor: Supervisor | None = None,
        token: str | None = None,
        api_auth: str | None = None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.supervisor = supervisor
        self.token = token or None
        self.api_auth = api_auth or None
        self.registry = Registry(config)
        self.started_at = time.time()
        # POST /sdapi/v1/options; kept across restarts in the data folder, as WebUI keeps its
        # config.json
        self.options_path = config.data_dir / "webui-options.json"
        self.options: dict[str, Any] = self._load_options()
        self.watcher = JobWatcher(self)

    def _load_options(self) -> dict[str, Any]:
        try:
            options = json.loads(self.options_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # a damaged file must not stop the service
            log.warning("ignoring %s: %s", self.options_path, exc)
            return {}
        if not isinstance(options, dict):
            return {}
        checkpoint = options.get("sd_model_checkpoint")
        if checkpoint is not None:
            try:
                self.registry.checkpoint(webui_model_name(str(checkpoint)))
            except (ValueError, OSError) as exc:  # the file went away since it was chosen
                log.warning("stored sd_model_checkpoint dropped: %s", exc)
                del options["sd_model_checkpoint"]
        return options

    def save_options(self, changes: dict[str, Any]) -> None:
        """Apply WebUI option changes and write them (atomically) for the next start."""
        options = {**self.options, **changes}
        self.options_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.options_path.with_suffix(".json.partial")
        partial.write_text(json.dumps(options, ensure_ascii=False, indent=1), encoding="utf-8")
        partial.replace(self.options_path)
        self.options = options

    def submit(
        self,
        request: dict[str, Any],
        user: str,
        priority: Priority = Priority.USER,
        idempotency_key: str | None = None,
    ) -> tuple[QueuedJob, bool]:
        """Check a txt2img request, queue it; returns the job and whether it is new."""
        # 1. check the request as the worker will, plus the files it names
        request = dict(request)
        model = request.pop("model", None)
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise ValueError(f"model: must be a checkpoint name or null, not {model!r}")
        if model == self.registry.checkpoint(None).name:
            model = None  # the base model by name: the same batches as a request naming none
        if model is not None:
            self.registry.checkpoint(model)
        params = from_request(request, self.config.generation, self.config.limits)
        for lora in params.all_loras()[1]:
            self.registry.lora(lora.name)
        # 2. queue it; a repeated idempotency key returns the earlier job
        before = time.time()
        job = self.queue.submit(
            "txt2img",
            {**params.to_dict(), "model": model},
            user,
            priority=priority,
            idempotency_key=idempotency_key,
            batch_key=batch_key(model, params),
        )
        return job, job.created_at >= before

    def job_json(self, job: QueuedJob) -> dict[str, Any]:
        """A job as docs/engine-api.md shows it."""
        return {
            "id": job.id,
            "kind": job.kind,
            "state": job.state.value,
            "user": job.user,
            "priority": job.priority.name.lower(),
            "params": job.params,
            "position": self.queue.position(job.id) if job.state == State.QUEUED else None,
            "progress": job.progress,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "outputs": job.outputs,
            "info": job.info,
            "error": job.error,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }

    def job_event(self, job: QueuedJob, positions: dict[str, int]) -> dict[str, Any] | None:
        """The event that describes a job's state now (None while running before step 1);
        `positions` are `queue.positions()`, read once for every followed job."""
        if job.state == State.QUEUED:
            return {"type": "queued", "position": positions.get(job.id)}
        if job.state == State.RUNNING:
            return None if job.progress is None else {"type": "progress", **job.progress}
        return {"type": job.state.value, "job": self.job_json(job)}

    def health(self) -> tuple[bool, dict[str, Any]]:
        workers = self.supervisor.status() if self.supervisor else []
        ok = bool(workers) and all(worker["alive"] for worker in workers)
        counts = self.queue.counts()
        return ok, {
            "ok": ok,
            "workers": workers,
            "queue_depth": counts[State.QUEUED],
            "running": counts[State.RUNNING],
        }

    def base_model(self) -> dict[str, Any]:
        ref = self.registry.checkpoint(None)
        return {"name": ref.name, "hash": self.registry.model_hash(ref), "default": True}

    def models(self) -> list[dict[str, Any]]:
        """The configured base model first, then models/Stable-diffusion."""
        base = self.base_model()
        others = [
            {"name": ref.name, "hash": self.registry.model_hash(ref), "default": False}
            for ref in self.registry.checkpoints()
            if ref.name != base["name"]
        ]
        return [base, *others]

    def loras(self) -> list[dict[str, Any]]:
        root = self.config.loras_dir
        return [
            {
                "name": name,
                "hash": self.registry.lora_hash(path),
                "path": str(path.relative_to(root)),
            }
            for name, path in self.registry.loras().items()
        ]


class JobWatcher:
    """One reader for every follower of a job (event streams, waiting WebUI requests).

    Each tick it reads all followed jobs in one query (and the queue order once, if any is
    queued) and puts each job's event into its followers' inboxes when it changed for them, so
    200 open streams cost one read per tick, not 200.
    """

    def __init__(self, svc: Service, tick_s: float = EVENT_POLL_S) -> None:
        self.svc = svc
        self.tick_s = tick_s
        self._followers: dict[str, list[_Follower]] = {}
        self._wanted = asyncio.Event()  # set while anyone follows a job

    @contextlib.contextmanager
    def follow(self, job_id: str) -> Iterator[asyncio.Queue[dict[str, Any]]]:
        """An inbox of the job's events as they change (from its state at the next tick on);
        the last one is final (`type` in FINAL_EVENTS)."""
        follower = _Follower()
        self._followers.setdefault(job_id, []).append(follower)
        self._wanted.set()
        try:
            yield follower.inbox
        finally:
            self._followers[job_id].remove(follower)
            if not self._followers[job_id]:
                del self._followers[job_id]

    async def run(self) -> None:
        """Read and hand out events every tick while anyone follows (run it as a task)."""
        while True:
            if not self._followers:
                self._wanted.clear()
                await self._wanted.wait()
            try:
                events = await blocking(self.read_events, list(self._followers))
            except Exception:  # a locked or busy database: try again next tick
                log.exception("reading followed jobs failed")
                events = {}
            for job_id, event in events.items():
                for follower in self._followers.get(job_id, ()):
                    follower.offer(event)
            await asyncio.sleep(self.tick_s)

    def read_events(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each job's current event (jobs running before their first step have none yet)."""
        jobs = self.svc.queue.get_many(job_ids)
        queued = any(job.state == State.QUEUED for job in jobs)
        positions = self.svc.queue.positions() if queued else {}
        events = {job.id: self.svc.job_event(job, positions) for job in jobs}
        return {job_id: event for job_id, event in events.items() if event is not None}


class _Follower:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.last: dict[str, Any] | None = None

    def offer(self, event: dict[str, Any]) -> None:
        if event != self.last:
            self.last = event
            self.inbox.put_nowait(event)


SERVICE = web.AppKey("service", Service)


def service(request: web.Request) -> Service:
    return request.app[SERVICE]


async def blocking(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking (SQLite, file) call off the event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)


def error_response(status: int, message: str, headers: dict[str, str] | None = None):
    return web.json_response({"error": message}, status=status, headers=headers)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (400 otherwise; 413 past engine.max_body_bytes)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"body: not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ValueError("body: must be a JSON object")
    return body


# -- middlewares -----------------------------------------------------------------------------


@web.middleware
async def errors_as_json(request: web.Request, handler: Callable[..., Awaitable[Any]]):
    """Every error as `{"error": "<field or reason>: <message>"}` with the right status."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SERVICE].config.engine.max_body_bytes
        return error_response(413, f"body: larger than {limit} bytes (engine.max_body_bytes)")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {
            k: v for k, v in exc.headers.items() if k not in ("Content-Type", "Content-Length")
        }
        return error_response(exc.status, exc.text or exc.reason, headers)
    except QueueFull as exc:
        headers = {"Retry-After": str(exc.retry_after_s)}
        body = {"error": f"queue: {exc}", "retry_after_s": exc.retry_after_s}
        return web.json_response(body, status=429, headers=headers)
    except JobNotFound as exc:
        return error_response(404, f"job: no job {exc.args[0]!r}")
    except ValueError as exc:
        return error_response(400, str(exc))


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _authorized(request: web.Request, svc: Service) -> bool:
    """Bearer token anywhere; on /sdapi also WebUI's basic auth."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if svc.token and scheme.lower() == "bearer" and _same(credentials.strip(), svc.token):
        return True
    if svc.api_auth and scheme.lower() == "basic" and request.path.startswith("/sdapi/"):
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return _same(decoded, svc.api_auth)
    return False


@web.middleware
async def require_auth(request: web.Request, handler: Callable[..., Awaitable[Any]]):
    """401 unless the request carries the credentials its path needs (/healthz is open)."""
    svc = request.app[SERVICE]
    webui = request.path.startswith("/sdapi/")
    needed = svc.token is not None or (webui and svc.api_auth is not None)
    if request.path == "/healthz" or not needed or _authorized(request, svc):
        return await handler(request)
    challenge = 'Basic realm="posterbot"' if webui and svc.api_auth else "Bearer"
    return error_response(
        401, "auth: missing or wrong credentials", {"WWW-Authenticate": challenge}
    )


# -- /v1 -------------------------------------------------------------------------------------


async def submit_job(request: web.Request) -> web.Response:
    """Queue a job: 201 (200 for a repeated idempotency key)."""
    svc = service(request)
    body = await read_json(request)
    kind = body.get("kind", "txt2img")
    if kind not in KINDS:
        raise ValueError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    params = body.get("params")
    if not isinstance(params, dict):
        raise ValueError("params: required, a JSON object of txt2img fields")
    user = body.get("user")
    if not isinstance(user, str) or not user.strip():
        raise ValueError("user: required, e.g. tg:123456")
    priority = body.get("priority", "user")
    if priority not in PRIORITIES:
        raise ValueError(f"priority: {priority!r} is not one of {', '.join(PRIORITIES)}")
    key = body.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not key):
        raise ValueError("idempotency_key: must be a non-empty string or null")
    if kind == "txt2img":
        job, created = await blocking(svc.submit, params, user, PRIORITIES[priority], key)
    else:
        from engine.server_training import submit_other  # it imports this module

        job, created = await blocking(
            submit_other, svc, kind, params, user, PRIORITIES[priority], key
        )
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
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"limit: {limit} is outside 1..{MAX_LIST_LIMIT}")

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


async def get_output(request: web.Request) -> web.StreamResponse:
    """A result PNG; 404 for anything outside the outputs folder."""
    root = service(request).config.outputs_dir.resolve()
    path = (root / request.match_info["path"]).resolve()
    if not path.is_relative_to(root) or path.suffix.lower() != ".png" or not path.is_file():
        raise web.HTTPNotFound(text=f"path: no output {request.match_info['path']!r}")
    return web.FileResponse(path, headers={"Content-Type": "image/png"})


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


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: queue depth, jobs by state, workers, wait and run time histograms."""
    svc = service(request)
    text = await blocking(prometheus_text, svc)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def prometheus_text(svc: Service) -> str:
    counts = svc.queue.counts()
    finished = svc.queue.finished_since(svc.started_at)  # histograms count from service start
    workers = svc.supervisor.status() if svc.supervisor else []
    lines = [
        "# HELP posterbot_queue_depth Jobs waiting in the queue.",
        "# TYPE posterbot_queue_depth gauge",
        f"posterbot_queue_depth {counts[State.QUEUED]}",
        "# HELP posterbot_jobs Jobs in the queue database by state.",
        "# TYPE posterbot_jobs gauge",
        *(f'posterbot_jobs{{state="{state.value}"}} {n}' for state, n in counts.items()),
        "# HELP posterbot_workers_alive Worker processes running.",
        "# TYPE posterbot_workers_alive gauge",
        f"posterbot_workers_alive {sum(worker['alive'] for worker in workers)}",
    ]
    lines += _histogram(
        "posterbot_job_wait_seconds",
        "Seconds from submit to the latest claim, of jobs finished since the service started.",
        [job.wait_s for job in finished if job.wait_s is not None],
    )
    lines += _histogram(
        "posterbot_job_run_seconds",
        "Seconds from the latest claim to the end, of jobs finished since the service started.",
        [job.run_s for job in finished if job.run_s is not None],
    )
    return "\n".join(lines) + "\n"


def _histogram(name: str, help_text: str, values: list[float]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bound in HISTOGRAM_BUCKETS_S:
        lines.append(f'{name}_bucket{{le="{bound}"}} {sum(v <= bound for v in values)}')
    lines += [
        f'{name}_bucket{{le="+Inf"}} {len(values)}',
        f"{name}_sum {sum(values):.6f}",
        f"{name}_count {len(values)}",
    ]
    return lines


# -- /sdapi/v1 (WebUI-compatible) --------------------------------------------------------------

# WebUI request fields that would change the picture in ways this engine cannot, refused unless
# left at a neutral value (webuiapi and WebUI's own UI send them with these values).
WEBUI_UNSUPPORTED = (
    "restore_faces",
    "tiling",
    "styles",
    "script_name",
    "alwayson_scripts",
    "hr_checkpoint_name",
    "hr_prompt",
    "hr_negative_prompt",
    "firstphase_width",
    "firstphase_height",
    "seed_resize_from_h",
    "seed_resize_from_w",
)
WEBUI_NEUTRAL = (None, False, 0, -1, "", [], {})
WEBUI_PARAM_FIELDS = (
    "prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "sampler_name", "steps",
    "cfg_scale", "width", "height", "batch_size", "n_iter", "enable_hr", "hr_scale",
    "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "denoising_strength",
)  # fmt: skip
# WebUI ≥ 1.9 names the noise schedule apart from the sampler; ours are combined names.
WEBUI_SCHEDULERS = {"": "", "automatic": "", "karras": " Karras"}


def webui_model_name(title: str) -> str:
    """`name.safetensors [hash]` (WebUI's checkpoint title) → `name`."""
    name = title.split(" [", 1)[0].strip()
    return name.removesuffix(".safetensors")


def webui_request(body: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """A WebUI txt2img body as our request (model included); ValueError naming a field."""
    # 1. refuse what we cannot render as asked
    for name in WEBUI_UNSUPPORTED:
        if body.get(name) not in WEBUI_NEUTRAL:
            raise ValueError(f"{name}: not supported by posterbot's engine, got {body[name]!r}")
    # 2. our fields under their WebUI names
    request = {name: body[name] for name in WEBUI_PARAM_FIELDS if body.get(name) is not None}
    sampler = request.get("sampler_name") or body.get("sampler_index")
    scheduler = str(body.get("scheduler") or "").lower()
    if scheduler not in WEBUI_SCHEDULERS:
        raise ValueError(f"scheduler: {body['scheduler']!r} is not one of Automatic, Karras")
    if sampler:
        suffix = WEBUI_SCHEDULERS[scheduler]
        request["sampler_name"] = sampler if sampler.endswith(suffix) else sampler + suffix
    # 3. per-request settings override the stored options, as in WebUI
    overrides = body.get("override_settings") or {}
    if not isinstance(overrides, dict):
        raise ValueError("override_settings: must be an object")
    settings = {**options, **overrides}
    if settings.get("sd_model_checkpoint"):
        request["model"] = webui_model_name(str(settings["sd_model_checkpoint"]))
    if settings.get("CLIP_stop_at_last_layers") is not None:
        request["clip_skip"] = settings["CLIP_stop_at_last_layers"]
    return request


def webui_user(request: web.Request) -> str:
    """`webui`, or `webui:<name>` for a basic-auth user."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            name = base64.b64decode(header[6:].strip()).decode().partition(":")[0]
            return f"{WEBUI_USER}:{name}"
        except (binascii.Error, UnicodeDecodeError):
            pass
    return WEBUI_USER


async def webui_txt2img(request: web.Request) -> web.Response:
    """WebUI's txt2img: queued like any job; answers when it is done."""
    svc = service(request)
    body = await read_json(request)
    params = webui_request(body, svc.options)
    queued, _ = await blocking(svc.submit, params, webui_user(request))
    try:
        job = await wait_finished(svc, queued.id)
    except asyncio.CancelledError:  # the client hung up: nobody will see the images
        await blocking(svc.queue.cancel, queued.id)
        raise
    if job["state"] != State.DONE.value:
        return error_response(500, f"job: {job['state']}: {job['error'] or 'no images'}")
    images = []
    if body.get("send_images", True):
        images = await blocking(read_outputs, svc.config.outputs_dir, job["outputs"])
    return web.json_response(
        {"images": images, "parameters": body, "info": json.dumps(job["info"])}
    )


async def wait_finished(svc: Service, job_id: str) -> dict[str, Any]:
    """The job as JSON once it has ended."""
    with svc.watcher.follow(job_id) as events:
        while (event := await events.get())["type"] not in FINAL_EVENTS:
            pass
        return event["job"]


def read_outputs(root: Path, outputs: list[str]) -> list[str]:
    return [base64.b64encode((root / path).read_bytes()).decode() for path in outputs]


def webui_title(model: dict[str, Any]) -> str:
    return f"{model['name']} [{model['hash']}]" if model["hash"] else model["name"]


async def webui_sd_models(request: web.Request) -> web.Response:
    """Checkpoints in WebUI's shape."""
    models = await blocking(service(request).models)
    return web.json_response(
        [
            {
                "title": webui_title(model),
                "model_name": model["name"],
                "hash": model["hash"],
                "sha256": None,
                "filename": model["name"],
                "config": None,
            }
            for model in models
        ]
    )


async def webui_loras(request: web.Request) -> web.Response:
    """LoRAs in WebUI's shape."""
    loras = await blocking(service(request).loras)
    return web.json_response(
        [
            {"name": lora["name"], "alias": lora["name"], "path": lora["path"], "metadata": {}}
            for lora in loras
        ]
    )


async def webui_samplers(request: web.Request) -> web.Response:
    """Sampler names as WebUI lists them."""
    return web.json_response(
        [{"name": name, "aliases": [], "options": {}} for name in sampler_names()]
    )


async def webui_upscalers(request: web.Request) -> web.Response:
    """Hires fix upscalers: latent, image, and model files in models/ESRGAN."""

    def names() -> list[str]:
        return upscaler_names(service(request).registry.upscalers())

    return web.json_response(
        [
            {"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
            for name in await blocking(names)
        ]
    )


async def webui_get_options(request: web.Request) -> web.Response:
    """The current model and CLIP skip, plus anything a client stored."""
    svc = service(request)
    base = await blocking(svc.base_model)
    defaults = {
        "sd_model_checkpoint": webui_title(base),
        "CLIP_stop_at_last_layers": svc.config.generation.clip_skip,
        "samples_format": "png",
    }
    return web.json_response({**defaults, **svc.options})


async def webui_set_options(request: web.Request) -> web.Response:
    """Store options; `sd_model_checkpoint` and `CLIP_stop_at_last_layers` affect txt2img."""
    svc = service(request)
    body = await read_json(request)
    checkpoint = body.get("sd_model_checkpoint")
    if checkpoint is not None:
        await blocking(svc.registry.checkpoint, webui_model_name(str(checkpoint)))
    clip_skip = body.get("CLIP_stop_at_last_layers")
    if clip_skip is not None and (not isinstance(clip_skip, int) or not 1 <= clip_skip <= 12):
        raise ValueError(f"CLIP_stop_at_last_layers: must be 1..12, not {clip_skip!r}")
    await blocking(svc.save_options, body)
    return web.json_response(None)


async def webui_progress(request: web.Request) -> web.Response:
    """WebUI's progress of the job running now (the newest if several)."""
    svc = service(request)

    def snapshot() -> tuple[list[QueuedJob], int]:
        return svc.queue.list_jobs(state=State.RUNNING, limit=1), svc.queue.depth()

    running, depth = await blocking(snapshot)
    job = running[0] if running else None
    progress = (job.progress if job else None) or {"step": 0, "total": 0}
    fraction = progress["step"] / progress["total"] if progress["total"] else 0.0
    elapsed = time.time() - job.started_at if job and job.started_at else 0.0
    eta = elapsed / fraction - elapsed if fraction else 0.0
    return web.json_response(
        {
            "progress": fraction,
            "eta_relative": eta,
            "state": {
                "skipped": False,
                "interrupted": bool(job and job.cancel_requested),
                "job": job.id if job else "",
                "job_count": depth + len(running),
                "job_timestamp": str(math.floor(job.started_at)) if job else "0",
                "job_no": 0,
                "sampling_step": progress["step"],
                "sampling_steps": progress["total"],
            },
            "current_image": None,
            "textinfo": None,
        }
    )


async def webui_png_info(request: web.Request) -> web.Response:
    """The infotext of a base64 PNG, raw and parsed."""
    body = await read_json(request)
    data = str(body.get("image") or "")
    if not data:
        raise ValueError("image: required, a base64 PNG")
    try:
        text = infotext.read_png(base64.b64decode(data.split(",", 1)[-1], validate=True))
    except (binascii.Error, OSError, SyntaxError) as exc:
        raise ValueError(f"image: not a base64 PNG ({exc})") from None
    return web.json_response(
        {
            "info": text or "",
            "items": {"parameters": text} if text else {},
            "parameters": infotext.parse(text) if text else {},
        }
    )


# -- the application ---------------------------------------------------------------------------


def make_app(svc: Service) -> web.Application:
    """The aiohttp application over a `Service` (workers are started by `running_service`)."""
    app = web.Application(
        middlewares=[errors_as_json, require_auth],
        client_max_size=svc.config.engine.max_body_bytes,
    )
    app[SERVICE] = svc
    app.router.add_post("/v1/jobs", submit_job)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", get_job)
    app.router.add_delete("/v1/jobs/{job_id}", cancel_job)
    app.router.add_get("/v1/jobs/{job_id}/events", job_events)
    app.router.add_get("/v1/outputs/{path:.+}", get_output)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/loras", list_loras)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/sdapi/v1/txt2img", webui_txt2img)
    app.router.add_get("/sdapi/v1/sd-models", webui_sd_models)
    app.router.add_get("/sdapi/v1/loras", webui_loras)
    app.router.add_get("/sdapi/v1/samplers", webui_samplers)
    app.router.add_get("/sdapi/v1/upscalers", webui_upscalers)
    app.router.add_get("/sdapi/v1/options", webui_get_options)
    app.router.add_post("/sdapi/v1/options", webui_set_options)
    app.router.add_get("/sdapi/v1/progress", webui_progress)
    app.router.add_post("/sdapi/v1/png-info", webui_png_info)
    from engine.server_training import add_routes  # datasets and LoRA versions

    add_routes(app)
    app.cleanup_ctx.append(watching_jobs)
    return app


async def watching_jobs(app: web.Application) -> AsyncIterator[None]:
    """The job watcher's task, for as long as the app runs."""
    task = asyncio.create_task(app[SERVICE].watcher.run(), name="job-watcher")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name could resolve to anything


def check_credentials(host: str, environ: dict[str, str]) -> tuple[str | None, str | None]:
    """The bearer token and WebUI api-auth from the environment; no open port without a token."""
    token, api_auth = environ.get(TOKEN_ENV) or None, environ.get(API_AUTH_ENV)
    if not is_loopback(host) and not token:
        raise ValueError(f"engine.host: {host} is not loopback; set {TOKEN_ENV} to listen there")
    if api_auth is not None and ":" not in api_auth:
        raise ValueError(f"{API_AUTH_ENV}: must be user:pass")
    return token, api_auth


@contextlib.asynccontextmanager
async def running_service(
    config: Config, host: str, port: int, environ: dict[str, str] | None = None
) -> AsyncIterator[str]:
    """The service (HTTP, queue, worker processes) running until the block exits; yields its URL.

    Runs in the caller's event loop, so `posterbot run` hosts the bot beside it. On exit HTTP
    stops first, then the workers get SIGTERM (their batches go back to the queue).
    """
    # 1. credentials from the environment only
    token, api_auth = check_credentials(host, dict(os.environ if environ is None else environ))
    # 2. the queue and one worker process per device, supervised from a thread
    devices = worker_devices(config.engine.devices, visible_gpu_count())
    queue = open_queue(config, workers=len(devices))
    supervisor = Supervisor(config, queue, devices)
    runner = web.AppRunner(
        make_app(Service(config, queue, supervisor, token, api_auth)),
        shutdown_timeout=SHUTDOWN_GRACE_S,
    )
    stop = threading.Event()
    supervising = threading.Thread(
        target=supervisor.run, args=(stop,), name="supervisor", daemon=True
    )
    await blocking(supervisor.start)
    supervising.start()
    try:
        # 3. HTTP
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        url = f"http://{host}:{runner.addresses[0][1]}"  # the port bound, also for port 0
        log.info("engine service on %s, workers on %s", url, ", ".join(devices))
        yield url
    finally:
        await runner.cleanup()
        stop.set()
        await blocking(supervising.join)
        await blocking(supervisor.stop)
        queue.close()


def serve(config: Config, host: str, port: int, environ: dict[str, str] | None = None) -> None:
    """Run the service alone until SIGINT/SIGTERM."""

    async def until_signal() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        async with running_service(config, host, port, environ):
            await stopping.wait()

    asyncio.run(until_signal())
