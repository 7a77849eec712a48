"""Engine input hardening (issue #15): what a request may hold is refused at submission, by a 400
(or 413) naming the field, never a 500 and never a worker stuck on it later.

The HTTP app runs in-process over this module's `config` (no worker: accepted jobs just queue);
the cancellation test renders on the tiny model.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import string
import struct
import tomllib
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from bot.i18n import catalog
from engine.diffusion.params import from_request
from engine.service.queue_common import MAX_RETRY_AFTER_S, QueueFull
from engine.service.queue_sqlite import JobQueue
from posterbot.config import GenerationSettings, LimitsConfig, TrainingConfig
from prompts.syntax import estimate_chunks, estimate_tokens
from tests.engine.conftest import AUTH
from tests.training.conftest import config_for, mascot_zip

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture
def config(engine_config, tmp_path, with_config):
    """A training-ready data folder (IP dada) whose only worker is on the CPU; room to queue."""
    config = with_config(config_for(engine_config, tmp_path / "data"), "engine", devices=["cpu"])
    return with_config(config, "engine", max_queue=1000)


async def post_raw(client, path: str, text: str):
    """POST a body as written (JSON's NaN, Infinity and 1e400 included)."""
    return await client.post(path, data=text.encode(), headers=JSON)


async def job(client, params: dict, kind: str = "txt2img"):
    body = {"kind": kind, "params": params, "user": "tg:1"}
    return await client.post("/v1/jobs", json=body, headers=AUTH)


async def refusal(response, status: int = 400) -> dict:
    assert response.status == status, await response.text()
    return await response.json()


def request(**fields) -> dict:
    return {"prompt": "a cat", **fields}


# -- 5. text limits (bytes, 75-token chunks) and cancelling before the first step -------------


async def test_a_megabyte_negative_prompt_is_refused_at_submission(client):
    body = await refusal(await job(client, request(negative_prompt="ugly, " * 175_000)))
    assert body["field"] == "negative_prompt" and body["code"] == "prompt_too_long"
    assert len(body["error"]) < 400  # the refused text is not echoed back


def test_every_text_field_is_limited_in_utf8_bytes():
    limits = LimitsConfig(max_text_bytes=4096)
    for field in ("prompt", "negative_prompt"):
        with pytest.raises(ValueError) as refused:
            from_request(request(**{field: "达达" * 1000}), GenerationSettings(), limits)
        assert refused.value.field == field and refused.value.code == "text_too_many_bytes"
        assert refused.value.values == {"field": field, "bytes": 6000, "limit": 4096}


def test_prompt_chunks_are_estimated_without_a_tokenizer_and_break_starts_a_chunk():
    assert estimate_chunks("") == 1 and estimate_chunks("a cat") == 1
    assert estimate_chunks("a cat BREAK a dog") == 2  # BREAK pads the chunk, as in WebUI
    assert estimate_tokens("cat, dog") == 3  # a word is a token, so is a comma
    assert estimate_tokens("达") == 3  # byte-level BPE: at most one token per UTF-8 byte
    assert estimate_chunks("cat, " * 100) == 3  # 200 tokens


def test_too_many_prompt_chunks_are_refused_naming_the_field():
    limits = LimitsConfig(max_prompt_chunks=2)
    defaults = GenerationSettings()
    from_request(request(prompt="a BREAK b"), defaults, limits)
    for field in ("prompt", "negative_prompt"):
        with pytest.raises(ValueError) as refused:
            from_request(request(**{field: "a BREAK b BREAK c"}), defaults, limits)
        assert refused.value.code == "prompt_too_many_chunks"
        assert refused.value.values == {"field": field, "chunks": 3, "limit": 2}
    # LoRA tags are not encoded: they do not count
    from_request(request(prompt="a <lora:x:1> " + "<lora:y:1>" * 200), defaults, limits)


async def test_poster_copy_of_a_megabyte_is_refused_naming_the_field(client):
    poster = {"title": "圣" * 300_000, "targets": [{"name": "a", "width": 512, "height": 512}]}
    body = await refusal(await job(client, request(poster=poster)))
    assert body["field"] == "poster.title" and len(body["error"]) < 400


def test_the_example_config_lists_every_limits_and_training_key():
    example = tomllib.loads(EXAMPLE.read_text("utf-8"))
    for section, cls in (("limits", LimitsConfig), ("training", TrainingConfig)):
        assert set(example[section]) == {f.name for f in dataclasses.fields(cls)}, section
        assert cls(**example[section]) == cls(), section  # and with the code's defaults


@pytest.mark.parametrize("language", ["zh", "en"])
def test_new_refusal_codes_have_wording_in_both_languages(language):
    values = {
        "text_too_many_bytes": {"field": "negative_prompt", "bytes": 6000, "limit": 4096},
        "prompt_too_many_chunks": {"field": "prompt", "chunks": 30, "limit": 20},
    }
    for code, given in values.items():
        wording = catalog(language)[f"refusal.{code}"]
        used = {name for _, name, _, _ in string.Formatter().parse(wording) if name}
        assert used <= set(given), code


def test_a_cancel_before_the_first_step_stops_the_render(engine):
    """Prompt encoding and LoRA loading come before step 1: a cancel then must not wait."""
    from engine.diffusion.generate import Cancelled

    steps = []
    params = from_request(request(), engine.config.generation, engine.config.limits)
    with pytest.raises(Cancelled):
        engine.txt2img(params, lambda *step: steps.append(step), lambda: True)
    assert steps == []  # stopped before the first denoising step


def test_a_cancel_after_encoding_stops_before_sampling(engine):
    from engine.diffusion.generate import Cancelled

    checks, steps = [], []

    def cancelled() -> bool:  # no to the check before LoRAs, yes to the one after encoding
        checks.append(1)
        return len(checks) > 1

    params = from_request(request(), engine.config.generation, engine.config.limits)
    with pytest.raises(Cancelled, match="after encoding"):
        engine.txt2img(params, lambda *step: steps.append(step), cancelled)
    assert steps == []


# -- 6. what used to be a 500 ------------------------------------------------------------------

JOB = '{"user": "tg:1", "params": %s}'


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ('{"prompt": "a", "steps": Infinity}', "steps"),
        ('{"prompt": "a", "steps": 1e400}', "steps"),
        ('{"prompt": "a", "steps": NaN}', "steps"),
        ('{"prompt": "a", "steps": -Infinity}', "steps"),
        ('{"prompt": "a", "cfg_scale": 1' + "0" * 400 + "}", "cfg_scale"),
        ('{"prompt": "a", "steps": 1' + "0" * 400 + "}", "steps"),
        ('{"prompt": null}', "prompt"),
        ('{"prompt": 5}', "prompt"),
        ('{"prompt": "a", "loras": [{"name": "dada_lora", "weight": [1]}]}', "loras"),
        ('{"prompt": "a", "loras": [{"name": "dada_lora", "weight": "heavy"}]}', "loras"),
        ('{"prompt": "a", "loras": [{"name": ["dada_lora"]}]}', "loras"),
        ('{"prompt": "a", "loras": ["dada_lora:heavy"]}', "loras"),
        ('{"prompt": "a <lora:dada_lora:[1]>"}', "prompt"),
    ],
)
async def test_bad_numbers_and_types_in_a_job_are_a_400_naming_the_field(client, params, field):
    body = await refusal(await post_raw(client, "/v1/jobs", JOB % params))
    assert body["field"] == field and body["error"].startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"prompt": "a", "sampler_name": 5}', "sampler_name"),
        ('{"prompt": "a", "sampler_index": ["Euler"]}', "sampler_name"),
        ('{"prompt": "a", "steps": NaN}', "steps"),
        ('{"prompt": null}', "prompt"),
    ],
)
async def test_bad_webui_fields_are_a_400_naming_the_field(client, body, field):
    body = await refusal(await post_raw(client, "/sdapi/v1/txt2img", body))
    assert body["field"] == field


@pytest.mark.parametrize("path", ["/v1/jobs", "/sdapi/v1/txt2img", "/sdapi/v1/png-info"])
async def test_json_nested_100000_deep_is_a_400_naming_the_body(client, path):
    body = await refusal(await post_raw(client, path, "[" * 100_000 + "]" * 100_000))
    assert body["field"] == "body"
    deep = '{"user": "tg:1", "params": {"prompt": "a", "loras": ' + "[" * 900 + "]" * 900 + "}}"
    assert (await refusal(await post_raw(client, path, deep)))["field"] == "body"


async def test_an_integer_of_5000_digits_is_a_400_naming_the_body(client):
    body = await refusal(
        await post_raw(client, "/v1/jobs", JOB % ('{"steps": 1' + "0" * 5000 + "}"))
    )
    assert body["field"] == "body"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, text: str = "a cat\nSteps: 2") -> bytes:
    """A PNG whose header declares width × height, with an infotext and a token IDAT."""
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + png_chunk(b"tEXt", b"parameters\0" + text.encode("latin-1"))
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


async def png_info(client, data: bytes):
    body = {"image": base64.b64encode(data).decode()}
    return await client.post("/sdapi/v1/png-info", json=body, headers=AUTH)


async def test_png_info_of_a_30000_square_png_is_refused_from_its_header(client):
    body = await refusal(await png_info(client, png_header_only(30000, 30000)))
    assert body["field"] == "image" and body["code"] == "size_too_large"
    assert body["values"] == {"width": 30000, "height": 30000}


async def test_png_info_reads_text_chunks_without_decoding_pixels(client):
    response = await png_info(client, png_header_only(8000, 8000))  # IDAT would not decode
    assert response.status == 200, await response.text()
    assert (await response.json())["info"] == "a cat\nSteps: 2"
    buffer = io.BytesIO()
    image = Image.new("RGB", (8, 8))
    info = PngInfo()
    info.add_itxt("poster", "达达", zip=True)
    info.add_text("parameters", "a dog", zip=True)
    image.save(buffer, format="PNG", pnginfo=info)
    items = (await (await png_info(client, buffer.getvalue())).json())["items"]
    assert items == {"poster": "达达", "parameters": "a dog"}
    for bad in (b"GIF89a", b"\x89PNG\r\n\x1a\n" + png_chunk(b"IDAT", b"x")):
        assert (await refusal(await png_info(client, bad)))["field"] == "image"


def encrypted(zip_bytes: bytes) -> bytes:
    """The zip with every member flagged as encrypted (zipfile cannot write encryption)."""
    data = bytearray(zip_bytes)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            data[start + offset] |= 0x1
            start += 4
    return bytes(data)


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def png(size=(64, 64), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 255 if mode == "1" else (200, 80, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload(client, data: bytes, name: str = "up"):
    return await client.post(f"/v1/datasets?name={name}&ip=dada", data=data, headers=AUTH)


def leftovers(config) -> list[str]:
    folder = config.datasets_dir
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize(
    ("zip_bytes", "code"),
    [
        (encrypted(mascot_zip()), "encrypted"),
        (zip_of([("a.png", png()), ("a.png/b.png", png())]), "path_conflict"),
        (zip_of([("a.png/b.png", png()), ("a.png", png())]), "path_conflict"),
    ],
)
async def test_hostile_zips_are_a_400_listing_the_file_and_nothing_is_kept(
    client, config, zip_bytes, code
):
    body = await refusal(await upload(client, zip_bytes))
    assert body["field"] == "dataset" and body["code"] == "dataset_rejected"
    assert code in {r["code"] for r in body["rejections"]}, body["rejections"]
    assert leftovers(config) == []


async def test_a_zip_whose_top_folder_is_dot_flat_imports_like_any_folder(client, config):
    members = [("white0.png", png()), ("white0.txt", b"dadaknight, solo")]
    zip_bytes = zip_of([(f".flat/{name}", data) for name, data in members])
    response = await upload(client, zip_bytes, name="flat")
    assert response.status == 201, await response.text()
    assert (config.datasets_dir / "flat" / "10_flat" / "white0.png").is_file()
    assert leftovers(config) == ["flat"]


# -- 7. what only the worker checked ----------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ('{"prompt": "a", "enable_hr": true, "hr_upscaler": "Nope"}', "hr_upscaler"),
        ('{"prompt": "a", "enable_hr": true, "hr_resize_x": -64}', "hr_resize_x"),
        ('{"prompt": "a", "enable_hr": true, "hr_resize_y": 100000}', "hr_resize_y"),
        ('{"prompt": "a", "loras": [{"name": "dada_lora", "weight": NaN}]}', "loras"),
        ('{"prompt": "a", "loras": [{"name": "dada_lora", "weight": 1e308}]}', "loras"),
        ('{"prompt": "a", "loras": ["dada_lora:nan"]}', "loras"),
        ('{"prompt": "a <lora:dada_lora:nan>"}', "prompt"),
        ('{"prompt": "a <lora:dada_lora:1e308>"}', "prompt"),
        ('{"prompt": "a <lora:dada_lora:-inf>"}', "prompt"),
    ],
)
async def test_what_the_worker_would_refuse_is_refused_at_submission(client, params, field):
    body = await refusal(await post_raw(client, "/v1/jobs", JOB % params))
    assert body["field"] == field


async def test_a_nan_lora_weight_says_the_weight_and_the_limit(client):
    body = await refusal(await post_raw(client, "/v1/jobs", JOB % '{"prompt": "a <lora:x:nan>"}'))
    assert body["code"] == "prompt_weight" and body["values"] == {"weight": "nan", "limit": 2.0}


@pytest.mark.parametrize(
    ("axes", "field"),
    [
        ({"steps": "100000"}, "steps"),
        ({"steps": "20,100000"}, "steps"),
        ({"cfg": "1e308"}, "cfg_scale"),
        ({"seeds": "1,99999999999"}, "seed"),
        ({"weights": "0.5,nan"}, "weights"),
        ({"versions": "v1", "weights": "1e308"}, "prompt"),
    ],
)
async def test_an_xyz_cell_the_worker_would_refuse_is_refused_at_submission(client, axes, field):
    body = await refusal(await job(client, {"ip": "dada", "axes": axes}, kind="xyz"))
    assert body["field"] == field


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"epochs": 1e9}, "epochs"),
        ({"repeats": 1e6}, "repeats"),
        ({"batch_size": 10000}, "batch_size"),
        ({"learning_rate": 1e9}, "learning_rate"),
        ({"unet_lr": 1e9}, "unet_lr"),
        ({"resolution": 65536, "max_bucket_reso": 65536}, "resolution"),
        ({"max_bucket_reso": 65536}, "max_bucket_reso"),
        ({"sample_steps": 10**6}, "sample_steps"),
        ({"epochs": float("inf")}, "epochs"),
        ({"unet_lr": float("nan")}, "unet_lr"),
        ({"seed": -5}, "seed"),
        ({"sample_prompts": ["a" * 10_000]}, "sample_prompts"),
    ],
)
async def test_training_runs_beyond_the_configured_ranges_are_refused_at_submission(
    client, config, params, field
):
    body = await refusal(await job(client, {"ip": "dada", "dataset": "d", **params}, kind="train"))
    assert body["field"] == field, body


async def test_training_infinity_in_raw_json_is_a_400_naming_the_parameter(client):
    text = '{"kind": "train", "user": "tg:1", "params": {"ip": "dada", "epochs": Infinity}}'
    body = await refusal(await post_raw(client, "/v1/jobs", text))
    assert body["field"] == "epochs" and body["code"] == "train_param_invalid"


# -- 10. a pixel budget for dataset intake -----------------------------------------------------


async def test_four_8000_square_pngs_are_refused_from_their_headers_naming_the_limit(
    client, config
):
    big = png((8000, 8000), mode="1")  # ~10 KB each: the whole zip is tiny
    zip_bytes = zip_of([(f"big{i}.png", big) for i in range(4)])
    assert len(zip_bytes) < 200_000
    body = await refusal(await upload(client, zip_bytes))
    [rejection] = body["rejections"]
    assert rejection["code"] == "too_many_pixels_total"
    assert "training.max_total_pixels" in rejection["reason"]
    assert str(TrainingConfig().max_total_pixels) in rejection["reason"]
    assert leftovers(config) == []


def test_a_chat_session_counts_pixels_across_its_files(config, with_config):
    svc_config = with_config(config, "training", max_total_pixels=64 * 64 + 100)
    from engine.training import sessions

    session = sessions.start_session(svc_config, "dada")
    assert sessions.add_session_file(session, "a.png", png(), svc_config) == []
    with pytest.raises(ValueError) as refused:
        sessions.add_session_file(session, "b.png", png(), svc_config)
    assert refused.value.rejections[0].code == "too_many_pixels_total"
    assert sorted(p.name for p in session.iterdir()) == ["a.png"]


# -- 14. Retry-After from measured throughput --------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_follows_measured_throughput_counting_batches(tmp_path):
    """200 jobs drained in 16 s, four at a time: a full queue of 200 has room in ~16 s."""
    clock = Clock()
    with JobQueue(tmp_path / "q.db", max_queue=200, now=clock) as queue:
        for i in range(200):
            queue.submit("txt2img", {}, f"u{i}", batch_key="same")
        while batch := queue.claim("w", 60, max_batch=4):
            clock.now += 0.32  # one pipeline call renders the four
            for claimed in batch:
                queue.complete(claimed.id, [])
        for i in range(200):
            queue.submit("txt2img", {}, f"u{i}")
        with pytest.raises(QueueFull) as refused:
            queue.submit("txt2img", {}, "late")
    assert 12 <= refused.value.retry_after_s <= 20


def test_retry_after_without_history_is_capped(tmp_path):
    clock = Clock()
    with JobQueue(tmp_path / "q.db", max_queue=500, now=clock) as queue:
        for i in range(500):
            queue.submit("txt2img", {}, f"u{i}")
        with pytest.raises(QueueFull) as refused:
            queue.submit("txt2img", {}, "late")
        assert refused.value.retry_after_s == MAX_RETRY_AFTER_S == 600  # not 500 × 10 s


async def test_the_429_carries_the_same_retry_after_in_header_and_body(client):
    for seed in range(3):
        await job(client, request(seed=seed))
    client.queue.max_queue = 3
    response = await job(client, request())
    body = await refusal(response, 429)
    assert response.headers["Retry-After"] == str(body["retry_after_s"])
    assert 1 <= body["retry_after_s"] <= 600
