"""The job kinds: for each, the request check the service runs at submit and the runner a worker
runs.

Adding a kind = one entry in `KINDS`, its check and its runner. A check runs in the service
process: no torch, it raises `Refusal` naming a field, and returns the params as the worker will
run them (plus a batch key when equal jobs may share one pipeline call). A runner is named
"module:function" and imported by the worker the first time it runs that kind, so the service
never imports what it needs (torch, diffusers); `function(worker, jobs)` ends every job it was
given (`engine.service.worker.Worker` has the helpers).
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.diffusion.controlnet_units import units_from_request
from engine.diffusion.extras import NO_UPSCALER, ExtrasParams, extras_params
from engine.diffusion.faces import check_detector, find_restorer
from engine.diffusion.grid import cell_requests, xyz_request
from engine.diffusion.hires import check_upscaler, is_latent
from engine.diffusion.img2img import upscaled_size
from engine.diffusion.params import MAX_INIT_IMAGES, GenerationParams, from_request
from engine.diffusion.registry import Registry, check_weights_file
from engine.service.devices import visible_gpu_count, worker_devices
from engine.service.finishing import check_spec
from engine.service.inputs import MAX_PICTURE_PIXELS, picture_size, store_picture
from engine.service.shared_files import share_dataset
from engine.training.params import check_train_request
from engine.training.versions import Versions
from posterbot.config import Config
from posterbot.errors import Refusal


@dataclass(frozen=True)
class Checked:
    """A request as the worker will run it."""

    params: dict[str, Any]
    batch_key: str | None = None  # jobs with equal keys may run in one pipeline call


@dataclass(frozen=True)
class JobKind:
    check: Callable[[Config, Registry, dict[str, Any]], Checked]
    runner: str  # "module:function", imported by the worker only
    timeout: str  # the setting that bounds one run, "section.key"

    def load_runner(self) -> Callable[..., None]:
        module, _, function = self.runner.partition(":")
        return getattr(importlib.import_module(module), function)

    def timeout_s(self, config: Config) -> int:
        section, _, key = self.timeout.partition(".")
        return getattr(getattr(config, section), key)


# -- checks ------------------------------------------------------------------------------------


def batch_key(model: str | None, params: GenerationParams) -> str:
    """Jobs with equal keys may share a pipeline call: same model and same `params.batch_key()`."""
    return json.dumps({"model": model, "params": params.batch_key()})


PICTURE_FIELDS = ("init_images", "mask")


def check_txt2img(config: Config, registry: Registry, request: dict[str, Any]) -> Checked:
    """A poster from a prompt: the params as the worker will check them, plus the model and
    LoRA files, and the finished posters' spec when the request asks for them (`poster`)."""
    for name in PICTURE_FIELDS:
        if request.get(name):
            raise Refusal(name, "pictures go with the job kind img2img")
    return check_generation(config, registry, request)


def check_img2img(config: Config, registry: Registry, request: dict[str, Any]) -> Checked:
    """A poster from pictures (img2img, inpainting): each picture checked and stored before the
    rest is checked as txt2img's is; the mask must have the first picture's size."""
    request = dict(request)
    pictures = request.get("init_images")
    if not isinstance(pictures, list) or not pictures:
        raise Refusal("init_images", 'required: pictures as base64 or {"output": path}')
    if len(pictures) > MAX_INIT_IMAGES:
        raise Refusal("init_images", f"at most {MAX_INIT_IMAGES} pictures")
    request["init_images"] = [
        store_picture(config, picture, f"init_images[{i}]") for i, picture in enumerate(pictures)
    ]
    if request.get("mask"):
        request["mask"] = store_picture(config, request["mask"], "mask", mode="RGBA")
        size = picture_size(config, request["init_images"][0])
        mask_size = picture_size(config, request["mask"])
        if mask_size != size:
            detail = f"is {mask_size[0]}x{mask_size[1]}, the picture {size[0]}x{size[1]}"
            raise Refusal("mask", detail, "mask_size")
    checked = check_generation(config, registry, request)
    if checked.params.get("sd_upscale_scale"):
        check_sd_upscale(config, registry, checked.params)
    return checked


def check_sd_upscale(config: Config, registry: Registry, params: dict[str, Any]) -> None:
    """The picture SD upscale makes: within the size limits, at least one tile large."""
    upscaler = params["sd_upscale_upscaler"]
    check_upscaler(upscaler, registry.upscalers(), "sd_upscale_upscaler")
    if is_latent(upscaler):
        raise Refusal(
            "sd_upscale_upscaler",
            f"{upscaler!r} works on latents; SD upscale needs a picture upscaler",
        )
    source = picture_size(config, params["init_images"][0])
    width, height = upscaled_size(source, params["sd_upscale_scale"])
    tile = f"{params['width']}x{params['height']}"
    if width < params["width"] or height < params["height"]:
        raise Refusal("sd_upscale_scale", f"{width}x{height} is smaller than one {tile} tile")
    if max(width, height) > config.limits.max_side or width * height > config.limits.max_pixels:
        size = {"width": width, "height": height}
        raise Refusal(
            "sd_upscale_scale",
            f"{width}x{height} is over the size limits",
            "size_too_large",
            **size,
        )


def check_generation(config: Config, registry: Registry, request: dict[str, Any]) -> Checked:
    """What txt2img and img2img check alike: the params, the model, LoRAs and upscaler, and
    the poster spec."""
    request = dict(request)
    model = request.pop("model", None)
    poster = request.pop("poster", None)
    spec = check_spec(poster, config).to_dict() if poster is not None else None
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise Refusal("model", f"must be a checkpoint name or null, not {model!r}")
    if model == registry.checkpoint(None).name:
        model = None  # the base model by name: the same batches as a request naming none
    base = registry.checkpoint(model)
    store = functools.partial(store_picture, config)
    units = units_from_request(config, request, base, store, bool(request.get("init_images")))
    params = from_request(request, config.generation, config.limits)
    if params.enable_hr:  # the upscaler the worker would look for (models/ESRGAN included)
        check_upscaler(params.hr_upscaler, registry.upscalers())
    for lora in params.all_loras()[1]:
        registry.lora(lora.name)
    if params.restore_faces:  # the restorer's and the detector's files, before queueing
        find_restorer(params.face_restoration_model or None, config.face_restorers_dir)
        check_detector(config.face_restorers_dir)
    checked = {**params.to_dict(), "model": model} | ({"poster": spec} if spec else {})
    if units and params.sd_upscale_scale:
        raise Refusal("sd_upscale_scale", "SD upscale with ControlNet units is not supported")
    if units:  # each job's control maps differ: rendered alone
        return Checked(checked | {"controlnet": [unit.to_dict() for unit in units]})
    return Checked(checked, batch_key(model, params))


def check_train(config: Config, registry: Registry, params: dict[str, Any]) -> Checked:
    """A LoRA training run, including what the service's workers can run (precision, optimizer)."""
    devices = worker_devices(config.engine.devices, visible_gpu_count())
    device_types = {device.partition(":")[0] for device in devices}
    checked = check_train_request(config, params, device_types).to_dict()
    return Checked(share_dataset(config, checked))  # for a worker on another host


XYZ_FIELDS = ("ip", "axes", "prompt")


def check_xyz(config: Config, registry: Registry, params: dict[str, Any]) -> Checked:
    """A comparison grid; every version it names must be one that trained to the end."""
    axes = params.get("axes")
    if not isinstance(axes, dict) or not axes:
        raise Refusal("axes", 'required, e.g. {"versions": "v1,v2", "weights": "0.6,1"}')
    unknown = set(params) - set(XYZ_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise Refusal(field, f"unknown xyz field (known: {', '.join(XYZ_FIELDS)})")
    prompt = params.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise Refusal("prompt", f"must be text or left out, not {prompt!r}")
    request = xyz_request(config, str(params.get("ip") or ""), axes, prompt)
    for cell in cell_requests(request):  # every cell as the worker will check it (steps, cfg …)
        from_request(cell, config.generation, config.limits)
    versions = {version["name"]: version for version in Versions(config).list()}
    for name in filter(None, request["axes"].get("versions", "").split(",")):
        version = versions.get(name)
        if version is not None and version["status"] != "done":
            raise Refusal(
                "lora",
                f"{name} did not finish training (status {version['status']})",
                "version_failed",
                version=name,
            )
        try:
            registry.lora(name)
        except ValueError:
            raise Refusal(
                "lora", f"no version or LoRA named {name!r}", "version_unknown", version=name
            ) from None
    return Checked(request)


def check_extras(config: Config, registry: Registry, request: dict[str, Any]) -> Checked:
    """WebUI's Extras on one picture: the fields, the upscalers' and face restorer's files, the
    picture (stored) and the size it would become."""
    if "image" not in request:
        raise Refusal("image", 'required: base64, or {"output": "<path of a result>"}')
    params = extras_params({**request, "image": ""})
    upscalers = registry.upscalers()
    for field in ("upscaler_1", "upscaler_2"):
        name = getattr(params, field)
        if name != NO_UPSCALER:
            check_upscaler(name, upscalers, field, latent=False)
            if name in upscalers:
                check_weights_file(upscalers[name], field)
    if params.restores_faces:
        find_restorer(params.face_restoration_model, config.face_restorers_dir)
        check_detector(config.face_restorers_dir)
    image = store_picture(config, request["image"], "image")
    width, height = params.output_size(*picture_size(config, image))
    if width * height > MAX_PICTURE_PIXELS:
        detail = f"would make {width}x{height}, past {MAX_PICTURE_PIXELS:,} pixels"
        raise Refusal("upscaling_resize", detail, "too_many_pixels")
    return Checked(ExtrasParams(**{**params.to_dict(), "image": image}).to_dict())


# -- the table ---------------------------------------------------------------------------------

KINDS: dict[str, JobKind] = {
    "txt2img": JobKind(
        check_txt2img, "engine.service.run_posters:run_posters", "engine.job_timeout_s"
    ),
    "img2img": JobKind(
        check_img2img, "engine.service.run_posters:run_posters", "engine.job_timeout_s"
    ),
    "train": JobKind(
        check_train, "engine.service.run_training:run_train", "training.job_timeout_s"
    ),
    "xyz": JobKind(check_xyz, "engine.service.run_training:run_xyz", "engine.job_timeout_s"),
    "extras": JobKind(check_extras, "engine.service.run_extras:run_extras", "engine.job_timeout_s"),
}


def job_kind(name: Any) -> JobKind:
    """The kind called `name`; a Refusal naming `kind` otherwise."""
    if not isinstance(name, str) or name not in KINDS:
        raise Refusal("kind", f"{name!r} is not one of {', '.join(KINDS)}")
    return KINDS[name]
