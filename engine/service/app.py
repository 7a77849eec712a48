"""The engine's HTTP service (aiohttp): the app factory wires the service's parts, and one
route table lists every route.

Our `/v1` API (`views.py`, the training routes in `training_views.py`) and a WebUI-compatible
`/sdapi/v1` subset (`webui.py`) put work into the same durable queue through `Service.submit`;
worker processes take it from there. `middlewares.py` checks credentials and turns every error
into JSON. docs/engine-api.md is the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from engine.service import (
    metrics,
    training_views,
    views,
    webui,
    webui_catalogue,
    webui_controlnet,
    webui_extras,
)
from engine.service.http import SERVICE
from engine.service.middlewares import errors_as_json, require_auth
from engine.service.state import Service

ROUTES = [
    ("POST", "/v1/jobs", views.submit_job),
    ("GET", "/v1/jobs", views.list_jobs),
    ("GET", "/v1/jobs/{job_id}", views.get_job),
    ("DELETE", "/v1/jobs/{job_id}", views.cancel_job),
    ("GET", "/v1/jobs/{job_id}/events", views.job_events),
    ("GET", "/v1/outputs/{path:.+}", views.get_output),
    ("POST", "/v1/posters", views.finish_poster),
    ("POST", "/v1/inputs", views.upload_picture),
    ("GET", "/v1/models", views.list_models),
    ("GET", "/v1/loras", views.list_loras),
    ("GET", "/healthz", views.healthz),
    ("GET", "/metrics", metrics.metrics),
    ("POST", "/v1/datasets/check", training_views.check_dataset),
    ("POST", "/v1/datasets", training_views.upload_dataset),
    ("POST", "/v1/datasets/{name}/fix", training_views.fix_dataset),
    ("POST", "/v1/dataset-sessions", training_views.start_session),
    ("POST", "/v1/dataset-sessions/{session}/files", training_views.add_session_file),
    ("POST", "/v1/dataset-sessions/{session}/finish", training_views.finish_session),
    ("DELETE", "/v1/dataset-sessions/{session}", training_views.discard_session),
    ("GET", "/v1/versions", training_views.list_versions),
    ("POST", "/v1/versions", training_views.register_version),
    ("POST", "/v1/versions/promote", training_views.promote_version),
    ("POST", "/v1/versions/rollback", training_views.rollback_version),
    ("GET", "/v1/versions/{name}/file", training_views.export_version),
    ("POST", "/sdapi/v1/txt2img", webui.webui_txt2img),
    ("POST", "/sdapi/v1/img2img", webui.webui_img2img),
    ("GET", "/sdapi/v1/sd-models", webui.webui_sd_models),
    ("GET", "/sdapi/v1/loras", webui.webui_loras),
    ("GET", "/sdapi/v1/samplers", webui.webui_samplers),
    ("GET", "/sdapi/v1/upscalers", webui.webui_upscalers),
    ("GET", "/sdapi/v1/options", webui.webui_get_options),
    ("POST", "/sdapi/v1/options", webui.webui_set_options),
    ("GET", "/sdapi/v1/progress", webui.webui_progress),
    ("POST", "/sdapi/v1/png-info", webui.webui_png_info),
    ("POST", "/sdapi/v1/extra-single-image", webui_extras.webui_extra_single_image),
    ("POST", "/sdapi/v1/extra-batch-images", webui_extras.webui_extra_batch_images),
    ("GET", "/sdapi/v1/face-restorers", webui_extras.webui_face_restorers),
    ("GET", "/sdapi/v1/realesrgan-models", webui_extras.webui_realesrgan_models),
    ("GET", "/sdapi/v1/prompt-styles", webui_catalogue.webui_prompt_styles),
    ("GET", "/sdapi/v1/embeddings", webui_catalogue.webui_embeddings),
    ("GET", "/sdapi/v1/hypernetworks", webui_catalogue.webui_hypernetworks),
    ("GET", "/sdapi/v1/cmd-flags", webui_catalogue.webui_cmd_flags),
    ("GET", "/controlnet/version", webui_controlnet.controlnet_version),
    ("GET", "/controlnet/model_list", webui_controlnet.controlnet_model_list),
    ("GET", "/controlnet/module_list", webui_controlnet.controlnet_module_list),
    ("GET", "/controlnet/settings", webui_controlnet.controlnet_settings),
    ("POST", "/controlnet/detect", webui_controlnet.controlnet_detect),
]


def make_app(svc: Service) -> web.Application:
    """The aiohttp application over a `Service` (workers are started by `running_service`)."""
    app = web.Application(
        middlewares=[errors_as_json, require_auth],
        client_max_size=svc.config.engine.max_body_bytes,
    )
    app[SERVICE] = svc
    app[webui.OPTIONS] = webui.WebuiOptions(svc.config, svc.registry)
    for method, path, view in ROUTES:
        app.router.add_route(method, path, view)
    app.cleanup_ctx.append(watching_jobs)
    return app


async def watching_jobs(app: web.Application) -> AsyncIterator[None]:
    """The job watcher's task, for as long as the app runs."""
    task = asyncio.create_task(app[SERVICE].watcher.run(), name="job-watcher")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
