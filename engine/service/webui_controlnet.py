"""The sd-webui-controlnet extension's routes (`/controlnet/...`), in its shapes.

Units themselves arrive with txt2img/img2img (`alwayson_scripts.controlnet.args`) and are
checked by the job kinds (`engine.diffusion.controlnet_units`). Here: the model and module
lists, the API version, the settings clients read, and `/controlnet/detect`, which runs a
weight-free preprocessor in the service's thread pool (OpenCV and numpy, no torch).
"""

from __future__ import annotations

import base64
from io import BytesIO
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image

from engine.diffusion.controlnet_units import (
    ANNOTATORS,
    MAX_UNITS,
    controlnet_models,
    model_title,
)
from engine.diffusion.preprocessors import find_preprocessor, sorted_preprocessors
from engine.service.http import blocking, read_json, service
from engine.service.inputs import decode_base64, decode_picture
from posterbot.errors import Refusal

API_VERSION = 3  # the extension's `get_api_version()` whose API this follows
MAX_DETECT_IMAGES = 8  # pictures per /controlnet/detect call: each is decoded and run here


def flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes")


async def controlnet_version(request: web.Request) -> web.Response:
    """The extension API's version number."""
    return web.json_response({"version": API_VERSION})


async def controlnet_model_list(request: web.Request) -> web.Response:
    """ControlNet models as `name [hash]` (the `update` flag is accepted: we always re-read)."""
    config = service(request).config

    def titles() -> list[str]:
        return [model_title(name, path) for name, path in controlnet_models(config).items()]

    return web.json_response({"model_list": await blocking(titles)})


async def controlnet_module_list(request: web.Request) -> web.Response:
    """Preprocessors by name, or by display name with `alias_names=true`, and their sliders:
    those that can run now (the extension lists all and downloads weights; we do not, so one
    whose annotator files are missing is left out, and clients such as the chat see it)."""
    alias = flag(request, "alias_names", False)
    annotators = service(request).config.controlnet_dir / ANNOTATORS
    preprocessors = [p for p in sorted_preprocessors() if p.installed(annotators)]
    names = [p.display_name if alias else p.name for p in preprocessors]
    detail = {name: p.detail() for name, p in zip(names, preprocessors, strict=True)}
    return web.json_response({"module_list": names, "module_detail": detail})


async def controlnet_settings(request: web.Request) -> web.Response:
    """How many units a request may enable."""
    return web.json_response({"control_net_unit_count": MAX_UNITS})


async def controlnet_detect(request: web.Request) -> web.Response:
    """Run a preprocessor on each picture: the control maps as base64 PNGs."""
    svc = service(request)
    body = await read_json(request)
    # webuiapi sends `controlnet_images`, the extension reads `controlnet_input_images`
    images = body.get("controlnet_input_images", body.get("controlnet_images"))
    if not isinstance(images, list) or not images:
        raise Refusal("controlnet_input_images", "required: a list of base64 pictures")
    if len(images) > MAX_DETECT_IMAGES:
        raise Refusal("controlnet_input_images", f"at most {MAX_DETECT_IMAGES} pictures")
    if body.get("controlnet_masks"):
        raise Refusal("controlnet_masks", "not supported: no preprocessor here takes a mask")
    preprocessor = find_preprocessor(body.get("controlnet_module", "none"), "controlnet_module")
    settings = [
        _number(body, f"controlnet_{name}")
        for name in ("processor_res", "threshold_a", "threshold_b")
    ]
    annotators = svc.config.controlnet_dir / ANNOTATORS
    preprocessor.check_files(annotators, "controlnet_module")
    if preprocessor.files:  # a network: torch, which only workers load
        raise Refusal(
            "controlnet_module",
            f"{preprocessor.name} runs a network, in generation units only (not in detect)",
        )

    def detect_all() -> list[str]:
        maps = []
        for i, image in enumerate(images):
            field = f"controlnet_input_images[{i}]"
            picture = decode_picture(decode_base64(image, field), field)
            control = preprocessor.run(np.asarray(picture), annotators, *settings)
            buffer = BytesIO()
            Image.fromarray(control).save(buffer, format="PNG")
            maps.append(base64.b64encode(buffer.getvalue()).decode())
        return maps

    return web.json_response({"images": await blocking(detect_all), "info": "Success"})


def _number(body: dict[str, Any], name: str) -> float:
    value = body.get(name, -1)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refusal(name, f"must be a number, not {value!r}")
    return value
