"""WebUI's Extras: upscaling by a factor or to a size, a second upscaler blended in, face
restoration after it; `webuiapi` (PyPI) against the real service; hostile pictures, names and
files refused at submission by a 400 naming the field, nothing queued."""

from __future__ import annotations

import base64
import dataclasses
import io
import pickle
import struct
import threading
import zlib

import numpy as np
import pytest
import webuiapi
from PIL import Image

from engine.diffusion.extras import ExtrasParams, extras_params, postprocess
from engine.service.worker import Worker
from tests.engine.conftest import API_AUTH, AUTH, basic_auth
from tests.fakes.models import write_face_detector, write_tiny_esrgan, write_tiny_restoreformer

FACES = "face_restoration_model"
BOX = (40, 36, 48, 56)
EYES_NOSE_MOUTH = [(54, 56), (74, 56), (64, 68), (56, 78), (72, 78)]


def picture(size=(48, 32), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3)).astype(np.uint8))


def b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def params(**fields) -> ExtrasParams:
    return extras_params({"image": "input:x", **fields})


# -- the processing ---------------------------------------------------------------------------


def test_lanczos_by_two_doubles_the_size_as_pillow_would():
    image = picture()
    result, info = postprocess(params(upscaler_1="Lanczos", upscaling_resize=2), image, {})
    assert result.size == (96, 64)
    assert np.array_equal(np.asarray(result), np.asarray(image.resize((96, 64), Image.LANCZOS)))
    assert info == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


def test_to_a_size_with_crop_is_exact_and_without_it_covers_the_size():
    image = picture((48, 32))
    asked = {"upscaler_1": "Lanczos", "resize_mode": 1, "upscaling_resize_w": 100}
    cropped, info = postprocess(params(**asked, upscaling_resize_h=100), image, {})
    assert cropped.size == (100, 100) and "Postprocess crop to: 100x100" in info
    whole, _ = postprocess(params(**asked, upscaling_resize_h=100, upscaling_crop=False), image, {})
    assert whole.size == (150, 100)  # scaled to cover 100x100, nothing cut
    # the crop is the middle of the whole picture
    assert np.array_equal(np.asarray(cropped), np.asarray(whole)[:, 25:125])


def test_the_second_upscaler_is_blended_in_by_its_visibility():
    image = picture()
    both = params(upscaler_1="Lanczos", upscaler_2="Nearest", extras_upscaler_2_visibility=0.5)
    blended, info = postprocess(both, image, {})
    lanczos, nearest = (image.resize((96, 64), f) for f in (Image.LANCZOS, Image.NEAREST))
    assert np.array_equal(np.asarray(blended), np.asarray(Image.blend(lanczos, nearest, 0.5)))
    assert "Postprocess upscaler 2: Nearest, Postprocess upscaler 2 visibility: 0.5" in info


def test_an_esrgan_model_from_the_esrgan_folder_upscales_to_the_factor(tmp_path):
    model = write_tiny_esrgan(tmp_path / "4x-tiny.safetensors")
    image = picture((16, 16))
    result, _ = postprocess(params(upscaler_1="4x-tiny"), image, {"4x-tiny": model})
    assert result.size == (32, 32)  # the model's 4×, then resized to the 2× asked for
    assert not np.array_equal(np.asarray(result), np.asarray(image.resize((32, 32), Image.LANCZOS)))


def test_nothing_asked_returns_the_picture_unchanged():
    image = picture()
    result, info = postprocess(params(), image, {})
    assert np.array_equal(np.asarray(result), np.asarray(image)) and info == ""


# -- the service, in-process (no worker: accepted jobs just queue) -----------------------------


@pytest.fixture
def config(engine_config, tmp_path):
    config = dataclasses.replace(engine_config, data_dir=tmp_path / "data")
    write_tiny_esrgan(config.upscalers_dir / "RealESRGAN_x2plus.safetensors")
    write_tiny_restoreformer(config.face_restorers_dir / "RestoreFormer.safetensors")
    write_face_detector(
        config.face_restorers_dir / "face_detection_yunet_test.onnx",
        (128, 128),
        BOX,
        EYES_NOSE_MOUTH,
    )
    return config


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height and holds one row: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4))


def gif_bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (1, 1)).save(buffer, format="GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", 65535, 65535)  # the screen it claims: 4 billion pixels
    return bytes(data)


def truncated_jpeg() -> bytes:
    return base64.b64decode(b64(picture((64, 64)), "JPEG"))[:400]


def raw(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD = "a good picture"  # stands for a 2048x2048 PNG in the cases below


@pytest.mark.parametrize(
    ("image", "fields", "field"),
    [
        (raw(png_header(20000, 20000)), {}, "image"),
        (raw(truncated_jpeg()), {}, "image"),
        (raw(gif_bomb()), {}, "image"),
        ("not base64!", {}, "image"),
        (None, {"upscaler_1": "Lanczos"}, "image"),
        (GOOD, {"upscaler_1": "R-ESRGAN 4x+"}, "upscaler_1"),
        (GOOD, {"upscaler_1": "Latent"}, "upscaler_1"),  # works only inside a generation
        (GOOD, {"upscaler_1": "Lanczos", "upscaling_resize": 9}, "upscaling_resize"),
        (GOOD, {"upscaler_1": "Lanczos", "upscaling_resize": 4}, "upscaling_resize"),  # 67 MP
        (GOOD, {"gfpgan_visibility": 1, "face_restoration_model": "GFPGAN"}, FACES),
        (GOOD, {"codeformer_visibility": 1}, "codeformer_visibility"),
        (GOOD, {"resize_mode": 2}, "resize_mode"),
    ],
)
async def test_hostile_or_impossible_extras_are_a_400_naming_the_field(
    client, image, fields, field
):
    body = fields | ({} if image is None else {"image": image})
    if image == GOOD:
        body["image"] = b64(Image.new("RGB", (2048, 2048), "gray"))
    response = await client.post("/sdapi/v1/extra-single-image", json=body, headers=AUTH)
    assert response.status == 400, await response.text()
    refusal = await response.json()
    assert refusal["error"].startswith(f"{field}:"), refusal
    assert client.queue.depth() == 0


@pytest.mark.parametrize("name", ["GFPGANv1.4.pth", "4x-evil.safetensors"])
async def test_a_pickle_renamed_as_a_model_file_is_refused_naming_the_field(client, config, name):
    folder = config.face_restorers_dir if "GFPGAN" in name else config.upscalers_dir
    (folder / name).write_bytes(pickle.dumps({"weights": "none"}))
    asked = {"gfpgan_visibility": 1, "face_restoration_model": "GFPGAN"}
    if "evil" in name:
        asked = {"upscaler_1": "4x-evil"}
    body = {"kind": "extras", "params": {"image": b64(picture()), **asked}, "user": "tg:1"}
    response = await client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status == 400
    refusal = await response.json()
    assert refusal["code"] == "model_unreadable" and name in refusal["error"]
    assert client.queue.depth() == 0


async def test_the_lists_of_face_restorers_and_esrgan_models(client):
    restorers = await (await client.get("/sdapi/v1/face-restorers", headers=AUTH)).json()
    assert restorers == [{"name": "RestoreFormer", "cmd_dir": "models/GFPGAN"}]
    models = await (await client.get("/sdapi/v1/realesrgan-models", headers=AUTH)).json()
    path = "models/ESRGAN/RealESRGAN_x2plus.safetensors"
    assert models == [{"name": "RealESRGAN_x2plus", "path": path, "scale": 2}]


@pytest.mark.slow
async def test_face_restoration_through_the_queue_changes_only_the_face(client, config):
    worker = Worker(config, "cpu#extras", "cpu")
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    try:
        image = picture((128, 128))
        body = {"image": b64(image), "gfpgan_visibility": 1}
        response = await client.post("/sdapi/v1/extra-single-image", json=body, headers=AUTH)
        answer = await response.json()
    finally:
        worker.stopping.set()
        thread.join(60)
    assert response.status == 200, answer
    assert answer["html_info"] == "Face restoration: RestoreFormer, GFPGAN visibility: 1"
    result = Image.open(io.BytesIO(base64.b64decode(answer["image"])))
    assert result.info["postprocessing"] == answer["html_info"]
    changed = np.abs(np.asarray(result).astype(int) - np.asarray(image).astype(int)).sum(2) > 0
    x, y, w, h = BOX
    assert changed[y : y + h, x : x + w].any()
    changed[y : y + h, x : x + w] = False
    assert not changed.any()


# -- webuiapi against the real service ----------------------------------------------------------


@pytest.fixture
def webui(live_service) -> webuiapi.WebUIApi:
    api = webuiapi.WebUIApi(host="127.0.0.1", port=live_service.port)
    api.set_auth(*API_AUTH)
    return api


def test_webuiapi_extra_single_image_upscales_and_the_service_keeps_serving(webui, live_service):
    image = picture((40, 24))
    result = webui.extra_single_image(image, upscaler_1="Lanczos", upscaling_resize=2)
    assert result.image.size == (80, 48)
    assert result.info == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    headers = basic_auth(*API_AUTH)
    hostile = {"image": raw(png_header(20000, 20000)), "upscaler_1": "Lanczos"}
    status, refusal = live_service.request("POST", "/sdapi/v1/extra-single-image", hostile, headers)
    assert status == 400 and refusal["error"].startswith("image:")
    # WebUI's own API tests post only the picture, and once with a "model" key
    for body in ({"image": b64(image)}, {"image": b64(image), "model": "clip"}):
        status, answer = live_service.request("POST", "/sdapi/v1/extra-single-image", body, headers)
        assert status == 200, answer
        assert Image.open(io.BytesIO(base64.b64decode(answer["image"]))).size == (40, 24)
    status, batch = live_service.request(
        "POST",
        "/sdapi/v1/extra-batch-images",
        {"imageList": [{"data": b64(image), "name": "a"}] * 2, "upscaler_1": "Nearest"},
        headers,
    )
    assert status == 200 and len(batch["images"]) == 2
