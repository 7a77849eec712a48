"""The WebUI-compatible `/sdapi/v1` subset, so existing WebUI clients work unchanged.

txt2img goes through the same `Service.submit` as `/v1/jobs` and waits for the job; the other
routes answer in WebUI's shapes from the registry and the queue.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.diffusion import infotext
from engine.diffusion.hires import upscaler_names
from engine.diffusion.registry import Registry
from engine.diffusion.samplers import sampler_names
from engine.service.http import blocking, error_response, read_json, service
from engine.service.queue_common import FINAL_STATES, Job, State
from engine.service.state import Service
from engine.service.webui_catalogue import apply_styles, option_defaults
from posterbot.config import Config
from posterbot.errors import Refusal
from posterbot.files import atomic_write_text

log = logging.getLogger(__name__)

WEBUI_USER = "webui"  # queue user of /sdapi requests (plus the basic-auth name, if any)

# WebUI request fields that would change the picture in ways this engine cannot, refused unless
# left at a neutral value (webuiapi and WebUI's own UI send them with these values).
WEBUI_UNSUPPORTED = (
    "script_name",
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
    "tiling", "restore_faces",
)  # fmt: skip
# img2img's own fields, and the defaults WebUI's API gives them when a client leaves them out
WEBUI_IMG2IMG_DEFAULTS = {
    "init_images": None, "mask": None, "resize_mode": 0, "denoising_strength": 0.75,
    "mask_blur": 4, "inpainting_fill": 0, "inpaint_full_res": True, "inpaint_full_res_padding": 0,
    "inpainting_mask_invert": False,
}  # fmt: skip
WEBUI_IMG2IMG_BOOLS = ("inpaint_full_res", "inpainting_mask_invert")  # WebUI takes 0/1 too
# WebUI ≥ 1.9 names the noise schedule apart from the sampler; ours are combined names.
WEBUI_SCHEDULERS = {"": "", "automatic": "", "karras": " Karras"}


def webui_model_name(title: str) -> str:
    """`name.safetensors [hash]` (WebUI's checkpoint title) → `name`."""
    name = title.split(" [", 1)[0].strip()
    return name.removesuffix(".safetensors")


class WebuiOptions:
    """What POST /sdapi/v1/options stored; kept across restarts in the data folder, as WebUI
    keeps its config.json."""

    def __init__(self, config: Config, registry: Registry) -> None:
        self.path = config.data_dir / "webui-options.json"
        self.registry = registry
        self.values: dict[str, Any] = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            options = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # a damaged file must not stop the service
            log.warning("ignoring %s: %s", self.path, exc)
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

    def save(self, changes: dict[str, Any]) -> None:
        """Apply WebUI option changes and write them (atomically) for the next start."""
        options = {**self.values, **changes}
        atomic_write_text(self.path, json.dumps(options, ensure_ascii=False, indent=1))
        self.values = options


OPTIONS = web.AppKey("webui_options", WebuiOptions)


def webui_request(
    body: dict[str, Any], options: dict[str, Any], kind: str = "txt2img"
) -> dict[str, Any]:
    """A WebUI txt2img or img2img body as our request (model included); ValueError naming a
    field."""
    # 1. refuse what we cannot render as asked
    script = sd_upscale_script(body) if kind == "img2img" else {}
    for name in WEBUI_UNSUPPORTED:
        if script and name == "script_name":
            continue
        if body.get(name) not in WEBUI_NEUTRAL:
            raise ValueError(f"{name}: not supported by posterbot's engine, got {body[name]!r}")
    if body.get("initial_noise_multiplier") not in (None, 1, 1.0):
        raise Refusal("initial_noise_multiplier", "only 1 (the noise as drawn) is supported")
    # 2. our fields under their WebUI names
    request = {name: body[name] for name in WEBUI_PARAM_FIELDS if body.get(name) is not None}
    if kind == "img2img":
        for name, default in WEBUI_IMG2IMG_DEFAULTS.items():
            value = body.get(name)
            request[name] = default if value is None else value
        for name in WEBUI_IMG2IMG_BOOLS:
            if request[name] in (0, 1):
                request[name] = bool(request[name])
        if not request["mask"]:
            del request["mask"]
        request |= script
    if body.get("alwayson_scripts"):  # ControlNet units; the job kind's check reads them
        request["alwayson_scripts"] = body["alwayson_scripts"]
    sampler = request.get("sampler_name") or body.get("sampler_index")
    if sampler is not None and not isinstance(sampler, str):
        raise Refusal("sampler_name", f"must be a sampler's name, not {sampler!r}")
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
    if request.get("restore_faces") and settings.get("face_restoration_model"):
        request["face_restoration_model"] = str(settings["face_restoration_model"])
    return request


SD_UPSCALE = "sd upscale"
WEBUI_UPSCALER_ORDER = ("None", "Lanczos", "Nearest")  # WebUI's upscaler indexes start so


def sd_upscale_script(body: dict[str, Any]) -> dict[str, Any]:
    """WebUI's "SD upscale" script (`script_args`: info, overlap, upscaler name or index,
    scale factor) as our fields; {} when the body runs no script or another one."""
    if str(body.get("script_name") or "").strip().lower() != SD_UPSCALE:
        return {}
    args = body.get("script_args") or []
    if not isinstance(args, list) or len(args) < 4:
        raise Refusal("script_args", "SD upscale takes [info, overlap, upscaler, scale factor]")
    _, overlap, upscaler, scale = args[:4]
    if isinstance(upscaler, int) and not isinstance(upscaler, bool):
        if not 0 <= upscaler < len(WEBUI_UPSCALER_ORDER):
            raise Refusal("script_args", f"upscaler index {upscaler} is not one of 0, 1, 2")
        upscaler = WEBUI_UPSCALER_ORDER[upscaler]
    if upscaler == "None":  # WebUI's "None" still resizes to the scale, with Lanczos
        upscaler = "Lanczos"
    return {
        "sd_upscale_overlap": overlap,
        "sd_upscale_upscaler": upscaler,
        "sd_upscale_scale": scale,
        "batch_size": 1,  # WebUI's batch size there is tiles per call; one picture per n_iter
    }


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
    return await webui_generate(request, "txt2img")


async def webui_img2img(request: web.Request) -> web.Response:
    """WebUI's img2img (inpainting with a `mask`): queued like any job; answers when done."""
    return await webui_generate(request, "img2img")


async def webui_generate(request: web.Request, kind: str) -> web.Response:
    """Queue a WebUI body as a job of `kind`, wait for it, answer in WebUI's shape."""
    svc = service(request)
    body = await read_json(request)
    params = webui_request(body, request.app[OPTIONS].values, kind)
    await blocking(apply_styles, params, body.get("styles"), svc.config)
    queued, _ = await blocking(svc.submit, kind, params, webui_user(request))
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
    if kind == "img2img":  # WebUI does not echo the pictures back
        body = {**body, "init_images": None, "mask": None}
    return web.json_response(
        {"images": images, "parameters": body, "info": json.dumps(job["info"])}
    )


async def wait_finished(svc: Service, job_id: str) -> dict[str, Any]:
    """The job as JSON once it has ended."""
    with svc.watcher.follow(job_id) as events:
        while (event := await events.get())["type"] not in FINAL_STATES:
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
    """WebUI's option keys: its defaults, our model and CLIP skip, what a client stored."""
    svc = service(request)
    base = await blocking(svc.base_model)
    defaults = {
        "sd_model_checkpoint": webui_title(base),
        "CLIP_stop_at_last_layers": svc.config.generation.clip_skip,
        "samples_format": "png",
    }
    return web.json_response({**option_defaults(), **defaults, **request.app[OPTIONS].values})


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
    await blocking(request.app[OPTIONS].save, body)
    return web.json_response(None)


async def webui_progress(request: web.Request) -> web.Response:
    """WebUI's progress of the job running now (the newest if several)."""
    svc = service(request)

    def snapshot() -> tuple[list[Job], int]:
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
    data = body.get("image") or ""
    if not data or not isinstance(data, str):
        raise ValueError("image: required, a base64 PNG")
    try:
        png = base64.b64decode(data.split(",", 1)[-1], validate=True)
    except binascii.Error as exc:
        raise ValueError(f"image: not a base64 PNG ({exc})") from None
    texts = infotext.read_png_texts(png)  # Refusal naming `image`; never decodes pixels
    text = texts.get(infotext.PNG_KEY)
    return web.json_response(
        {
            "info": text or "",
            "items": texts,  # every text chunk, as WebUI lists them (a poster's copy among them)
            "parameters": infotext.parse(text) if text else {},
        }
    )
