"""The WebUI-compatible `/sdapi/v1` subset: a third-party client (`webuiapi` from PyPI) against
the real service, and the request mapping and small endpoints in-process."""

from __future__ import annotations

import base64
import dataclasses
import json

import numpy as np
import pytest
import webuiapi
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image

from engine.diffusion.infotext import parse, png_bytes
from engine.diffusion.registry import Registry
from engine.service.app import make_app
from engine.service.queue_sqlite import open_queue
from engine.service.state import Service
from engine.service.webui import WebuiOptions, webui_request
from tests.engine.conftest import API_AUTH, basic_auth


@pytest.fixture
def webui(live_service) -> webuiapi.WebUIApi:
    api = webuiapi.WebUIApi(host="127.0.0.1", port=live_service.port, sampler="Euler", steps=3)
    api.set_auth(*API_AUTH)
    return api


@pytest.mark.slow
def test_webuiapi_generates_and_the_infotext_matches_the_request(webui):
    result = webui.txt2img(
        prompt="dadaknight, a rider in the snow",
        negative_prompt="lowres",
        seed=1234,
        cfg_scale=5,
        width=64,
        height=64,
        batch_size=2,
    )
    assert len(result.images) == 2
    assert result.info["all_seeds"] == [1234, 1235]
    for image, seed in zip(result.images, [1234, 1235], strict=True):
        assert image.size == (64, 64)
        info = parse(image.info["parameters"])
        assert info["Prompt"] == "dadaknight, a rider in the snow"
        assert info["Negative prompt"] == "lowres"
        assert (info["Seed"], info["Steps"], info["Sampler"]) == (str(seed), "3", "Euler")
        assert (info["Size"], info["CFG scale"]) == ("64x64", "5")
    assert parse(result.info["infotexts"][0])["Seed"] == "1234"


@pytest.mark.slow
def test_webuiapi_lists_and_picks_the_model(webui):
    models = webui.get_sd_models()
    assert models[0]["model_name"] == "tiny-sd15"
    assert "Euler a" in [s["name"] for s in webui.get_samplers()]
    webui.set_options({"sd_model_checkpoint": models[0]["title"]})
    assert webui.get_options()["sd_model_checkpoint"] == models[0]["title"]
    result = webui.txt2img(prompt="x", seed=5, width=64, height=64, steps=2)
    assert parse(result.image.info["parameters"])["Model"] == "tiny-sd15"


# -- in-process ---------------------------------------------------------------------------------


@pytest.fixture
async def client(engine_config, tmp_path):
    config = dataclasses.replace(engine_config, data_dir=tmp_path)
    with open_queue(config) as queue:
        app = make_app(Service(config, queue, api_auth=":".join(API_AUTH)))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            yield client


def test_webui_fields_map_to_ours():
    body = {
        "prompt": "x",
        "sampler_name": "DPM++ 2M",
        "scheduler": "Karras",
        "restore_faces": False,
        "styles": [],
        "seed_resize_from_h": -1,
        "eta": 1.0,
        "override_settings": {"sd_model_checkpoint": "dreamy.safetensors [0123456789]"},
    }
    request = webui_request(body, {"CLIP_stop_at_last_layers": 2})
    assert request == {
        "prompt": "x",
        "sampler_name": "DPM++ 2M Karras",
        "model": "dreamy",
        "clip_skip": 2,
        "restore_faces": False,
    }
    assert webui_request({"prompt": "x", "sampler_index": "Euler"}, {})["sampler_name"] == "Euler"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"script_name": "x/y/z plot"}, "script_name"),
        ({"scheduler": "Exponential"}, "scheduler"),
    ],
)
def test_webui_options_we_cannot_honour_are_refused_by_name(body, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        webui_request({"prompt": "x", **body}, {})


async def test_txt2img_bad_field_is_400_before_queueing(client):
    headers = basic_auth(*API_AUTH)
    response = await client.post("/sdapi/v1/txt2img", json={"steps": 0}, headers=headers)
    assert response.status == 400
    assert (await response.json())["error"].startswith("prompt:")
    response = await client.post(
        "/sdapi/v1/txt2img", json={"prompt": "x", "width": 63}, headers=headers
    )
    assert (await response.json())["error"].startswith("width:")


async def test_png_info_reads_the_infotext(client):
    text = "a cat\nNegative prompt: dog\nSteps: 3, Sampler: Euler, Seed: 9, Size: 64x64"
    data = png_bytes(Image.new("RGB", (8, 8)), text)
    body = {"image": "data:image/png;base64," + base64.b64encode(data).decode()}
    response = await client.post("/sdapi/v1/png-info", json=body, headers=basic_auth(*API_AUTH))
    info = await response.json()
    assert info["info"] == text
    assert info["parameters"]["Seed"] == "9" and info["parameters"]["Negative prompt"] == "dog"
    response = await client.post(
        "/sdapi/v1/png-info", json={"image": "!!"}, headers=basic_auth(*API_AUTH)
    )
    assert response.status == 400


async def test_progress_and_options_answer_in_webui_shape(client):
    headers = basic_auth(*API_AUTH)
    progress = await (await client.get("/sdapi/v1/progress", headers=headers)).json()
    assert progress["progress"] == 0.0 and progress["state"]["job_count"] == 0
    response = await client.post(
        "/sdapi/v1/options", json={"sd_model_checkpoint": "nope"}, headers=headers
    )
    assert response.status == 400
    assert (await response.json())["error"].startswith("model:")
    options = await (await client.get("/sdapi/v1/options", headers=headers)).json()
    assert options["sd_model_checkpoint"].startswith("tiny-sd15 [")
    assert json.loads(json.dumps(options))  # plain JSON


async def test_stored_options_survive_a_restart(engine_config, tmp_path):
    config = dataclasses.replace(engine_config, data_dir=tmp_path)
    headers = basic_auth(*API_AUTH)
    for body in ({"CLIP_stop_at_last_layers": 2, "outdir_samples": "x"}, {}):
        with open_queue(config) as queue:  # a fresh service each time: a restart
            app = make_app(Service(config, queue, api_auth=":".join(API_AUTH)))
            async with TestClient(TestServer(app, host="127.0.0.1")) as client:
                if body:
                    response = await client.post("/sdapi/v1/options", json=body, headers=headers)
                    assert response.status == 200
                options = await (await client.get("/sdapi/v1/options", headers=headers)).json()
        assert options["CLIP_stop_at_last_layers"] == 2 and options["outdir_samples"] == "x"
    (tmp_path / "webui-options.json").write_text("{damaged")
    with open_queue(config) as queue:
        assert (
            WebuiOptions(config, Registry(config)).values == {}
        )  # a damaged file is ignored, not fatal
    gone = {"sd_model_checkpoint": "deleted [abc]", "CLIP_stop_at_last_layers": 2}
    (tmp_path / "webui-options.json").write_text(json.dumps(gone))
    # a removed model falls back to the base, as in WebUI
    assert WebuiOptions(config, Registry(config)).values == {"CLIP_stop_at_last_layers": 2}


async def test_sdapi_needs_basic_auth_when_configured(client):
    assert (await client.get("/sdapi/v1/samplers")).status == 401
    response = await client.get("/sdapi/v1/samplers", headers=basic_auth("webui", "wrong"))
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")


async def test_samplers_and_upscalers_use_webui_names(client):
    headers = basic_auth(*API_AUTH)
    samplers = await (await client.get("/sdapi/v1/samplers", headers=headers)).json()
    assert {"Euler a", "DPM++ 2M Karras"} <= {sampler["name"] for sampler in samplers}
    upscalers = await (await client.get("/sdapi/v1/upscalers", headers=headers)).json()
    assert {"Latent", "Lanczos"} <= {upscaler["name"] for upscaler in upscalers}


@pytest.mark.slow
def test_webuiapi_inpaints_through_img2img_and_keeps_the_unmasked_pixels(webui):
    init = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    result = webui.img2img(
        images=[init], mask_image=mask, prompt="a blue ball", seed=7, width=64, height=64,
        denoising_strength=0.8, mask_blur=0, inpainting_fill=1, inpaint_full_res=False,
    )  # fmt: skip
    out = np.asarray(result.image).astype(int)
    assert result.image.size == (64, 64)
    assert (out[:16] == (200, 40, 40)).all() and (out[48:] == (200, 40, 40)).all()
    assert np.abs(out[20:44, 20:44] - (200, 40, 40)).mean() > 5
    info = parse(result.image.info["parameters"])
    assert (info["Denoising strength"], info["Mask blur"], info["Seed"]) == ("0.8", "0", "7")
    assert info["Masked content"] == "original"
