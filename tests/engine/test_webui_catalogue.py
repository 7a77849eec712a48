"""WebUI's lists and options beyond models: styles, embeddings, hypernetworks, cmd-flags, option
defaults; and pictures sent to /sdapi/v1/img2img and /v1/jobs checked before anything is queued."""

from __future__ import annotations

import base64
import dataclasses
import struct
from io import BytesIO

import numpy as np
import pytest
import torch
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from safetensors.torch import save_file

from engine.diffusion.params import from_request
from engine.service.app import make_app
from engine.service.queue_sqlite import open_queue
from engine.service.state import Service
from engine.service.webui_catalogue import apply_styles, styles
from posterbot.config import Preset
from posterbot.errors import Refusal
from tests.engine.conftest import API_AUTH, basic_auth
from tests.training.test_dataset import bomb_png

HEADERS = basic_auth(*API_AUTH)


@pytest.fixture
def data_config(engine_config, tmp_path):
    presets = {"poster": Preset(style_tags=["flat colours", "bold outline"])}
    return dataclasses.replace(engine_config, data_dir=tmp_path, presets=presets)


@pytest.fixture
async def client(data_config):
    with open_queue(data_config) as queue:
        app = make_app(Service(data_config, queue, api_auth=":".join(API_AUTH)))
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            client.queue = queue
            yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png_of(image: Image.Image) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def gif_bomb() -> bytes:
    buffer = BytesIO()
    Image.new("P", (16, 16)).save(buffer, format="GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", 65535, 65535)  # the screen claims 65535x65535
    return bytes(data)


def truncated_jpeg() -> bytes:
    buffer = BytesIO()
    Image.effect_noise((256, 256), 60).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()[:3000]


GOOD = b64(png_of(Image.new("RGB", (64, 64), (200, 50, 50))))


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (
            {"init_images": [b64(bomb_png(20000, 20000))]},
            "init_images[0]",
            "too many pixels",
        ),
        ({"init_images": [b64(truncated_jpeg())]}, "init_images[0]", "truncated"),
        ({"init_images": [b64(gif_bomb())]}, "init_images[0]", "not a PNG"),
        ({"init_images": ["not base64!"]}, "init_images[0]", "base64"),
        ({"init_images": [GOOD, GOOD, "%%%"]}, "init_images[2]", "base64"),
        ({"init_images": [GOOD], "mask": b64(png_of(Image.new("L", (32, 64))))}, "mask", "64x64"),
        ({"init_images": [GOOD], "resize_mode": 7}, "resize_mode", "outside"),
        ({"init_images": []}, "init_images", "required"),
    ],
)
async def test_hostile_pictures_are_400s_naming_the_field_and_nothing_is_queued(
    client, body, field, words
):
    for route, payload in (
        ("/sdapi/v1/img2img", {"prompt": "x", **body}),
        ("/v1/jobs", {"kind": "img2img", "user": "tg:1", "params": {"prompt": "x", **body}}),
    ):
        headers = HEADERS if route.startswith("/sdapi") else {}  # no /v1 token in this service
        response = await client.post(route, json=payload, headers=headers)
        answer = await response.json()
        assert response.status == 400, answer
        assert answer["error"].startswith(f"{field}:") and words in answer["error"], answer
    assert client.queue.depth() == 0
    # and the service keeps serving
    assert (await client.get("/sdapi/v1/samplers", headers=HEADERS)).status == 200


async def test_a_good_picture_is_queued_as_a_stored_reference(client, data_config):
    response = await client.post(
        "/v1/jobs",
        json={"kind": "img2img", "user": "tg:1", "params": {"prompt": "x", "init_images": [GOOD]}},
    )
    assert response.status == 201
    job = client.queue.list_jobs(limit=1)[0]
    (reference,) = job.params["init_images"]
    assert reference.startswith("input:")
    stored = data_config.inputs_dir / f"{reference.removeprefix('input:')}.png"
    assert Image.open(stored).size == (64, 64)


async def test_options_have_webui_keys_and_keep_what_is_written(client):
    options = await (await client.get("/sdapi/v1/options", headers=HEADERS)).json()
    assert options["send_seed"] is True and options["samples_format"] == "png"
    response = await client.post("/sdapi/v1/options", json={"send_seed": False}, headers=HEADERS)
    assert response.status == 200
    options = await (await client.get("/sdapi/v1/options", headers=HEADERS)).json()
    assert options["send_seed"] is False


async def test_styles_are_our_presets_and_webuis_styles_csv(client, data_config):
    (data_config.data_dir / "styles.csv").write_text(
        'name,prompt,negative_prompt\nmovie,"cinematic, {prompt}, film grain",lowres\n',
        encoding="utf-8",
    )
    listed = await (await client.get("/sdapi/v1/prompt-styles", headers=HEADERS)).json()
    assert {"name": "poster", "prompt": "flat colours, bold outline", "negative_prompt": ""} in (
        listed
    )
    assert {"name": "movie", "prompt": "cinematic, {prompt}, film grain",
            "negative_prompt": "lowres"} in listed  # fmt: skip
    request = {"prompt": "a rider", "negative_prompt": "blurry"}
    apply_styles(request, ["movie", "poster"], data_config)
    assert request["prompt"] == "cinematic, a rider, film grain, flat colours, bold outline"
    assert request["negative_prompt"] == "blurry, lowres"
    with pytest.raises(Refusal, match="styles: no style 'noir'"):
        apply_styles({"prompt": "x"}, ["noir"], data_config)
    assert set(styles(data_config)) == {"poster", "movie"}


async def test_the_other_lists_answer_in_webui_shapes(client):
    for route in ("cmd-flags", "hypernetworks", "embeddings"):
        response = await client.get(f"/sdapi/v1/{route}", headers=HEADERS)
        assert response.status == 200
    flags = await (await client.get("/sdapi/v1/cmd-flags", headers=HEADERS)).json()
    assert flags["api"] is True and flags["lora_dir"].endswith("Lora")
    assert await (await client.get("/sdapi/v1/hypernetworks", headers=HEADERS)).json() == []


def write_embedding(folder, name: str, vectors: int, width: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(vectors)
    save_file({"emb_params": torch.randn(vectors, width, generator=generator)},
              str(folder / f"{name}.safetensors"))  # fmt: skip


async def test_embeddings_are_listed_and_change_the_picture_where_the_prompt_names_them(
    client, data_config, engine_config
):
    from engine.diffusion.generate import Engine

    width = Engine(data_config).pipe.text_encoder.config.hidden_size
    write_embedding(data_config.embeddings_dir, "dadastyle", 3, width)
    (data_config.embeddings_dir / "broken.safetensors").write_bytes(b"\0" * 16)
    listed = await (await client.get("/sdapi/v1/embeddings", headers=HEADERS)).json()
    assert listed["loaded"]["dadastyle"]["vectors"] == 3
    assert listed["loaded"]["dadastyle"]["shape"] == width
    assert "broken" in listed["skipped"]

    engine = Engine(data_config)

    def picture(prompt: str) -> np.ndarray:
        params = from_request({"prompt": prompt, "seed": 3}, data_config.generation,
                              data_config.limits)  # fmt: skip
        return np.asarray(engine.txt2img(params).images[0]).astype(int)

    plain = picture("a rider in the snow")
    assert np.array_equal(plain, picture("a rider in the snow"))  # nothing loaded by then
    styled = picture("a rider in the snow, dadastyle")
    assert "dadastyle" in engine.embeddings.loaded
    assert np.abs(styled - plain).mean() > 1
    assert np.array_equal(plain, picture("a rider in the snow"))  # loaded, but not named
