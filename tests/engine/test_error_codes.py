"""Stable error codes: every refusal is a 400 with a field, a code and values beside the English
text; a job that ended badly carries its code; the job-kind table is the one way in.

The app runs in-process with no workers; the test plays the worker through the queue.
"""

from __future__ import annotations

import importlib.util

import pytest

from engine.service.kinds import KINDS
from engine.service.state import Service
from engine.training.params import resolve_precision
from engine.training.versions import Versions
from tests.engine.conftest import AUTH
from tests.training.conftest import config_for, mascot_zip

PARAMS = {"prompt": "a cat", "seed": 7}


@pytest.fixture
def config(engine_config, tmp_path, with_config):
    """A training-ready data folder whose only worker is on the CPU."""
    config = with_config(config_for(engine_config, tmp_path / "data"), "engine", devices=["cpu"])
    return with_config(config, "engine", max_queue=2)


async def submit(client, params, kind="txt2img", **fields):
    body = {"kind": kind, "params": params, "user": "tg:1", **fields}
    return await client.post("/v1/jobs", json=body, headers=AUTH)


@pytest.mark.parametrize(
    ("params", "field", "code", "values"),
    [
        (
            {**PARAMS, "steps": 500},
            "steps",
            "out_of_range",
            {"field": "steps", "value": 500, "low": 1, "high": 150},
        ),
        ({**PARAMS, "sampler_name": "Nope"}, "sampler_name", "unknown_sampler", {"name": "Nope"}),
        ({"prompt": "<lora:nobody:1> x"}, "lora", "lora_missing", {"name": "nobody"}),
        ({**PARAMS, "model": "gone"}, "model", "model_missing", {"name": "gone"}),
        ({"prompt": "x" * 5000}, "prompt", "prompt_too_long", {"limit": 4000}),
        (
            {**PARAMS, "width": 4104, "height": 512},
            "width/height",
            "size_too_large",
            {"width": 4104, "height": 512},
        ),
        ({**PARAMS, "colour": 1}, "colour", "invalid_field", {"field": "colour"}),
    ],
)
async def test_a_refused_poster_says_field_code_and_values(client, params, field, code, values):
    response = await submit(client, params)
    assert response.status == 400
    body = await response.json()
    assert body["error"].startswith(f"{field}: ")  # the English text stays as it was
    assert (body["field"], body["code"], body["values"]) == (field, code, values)


async def test_a_missing_lora_is_named_without_the_server_path(client, config):
    body = await (await submit(client, {"prompt": "<lora:nobody:1> x"})).json()
    assert "nobody" in body["error"] and str(config.data_dir) not in body["error"]


async def test_an_unknown_job_kind_is_a_400_naming_kind(client):
    body = await (await submit(client, PARAMS, kind="upscale")).json()
    assert body["field"] == "kind" and body["code"] == "invalid_field"
    assert body["error"] == f"kind: 'upscale' is not one of {', '.join(KINDS)}"


async def test_a_full_queue_is_429_with_its_code(client):
    for seed in (1, 2):
        assert (await submit(client, {**PARAMS, "seed": seed})).status == 201
    response = await submit(client, PARAMS)
    assert response.status == 429
    body = await response.json()
    assert body["code"] == "queue_full" and body["retry_after_s"] >= 1


async def test_a_failed_job_carries_its_code_and_values(client):
    job = await (await submit(client, PARAMS)).json()
    assert (job["error_code"], job["error_values"]) == (None, None)
    (claimed,) = client.queue.claim("w1", lease_s=60)
    client.queue.fail(
        claimed.id,
        "out of GPU memory rendering 512x768 even 1 image(s) at a time",
        retry=False,
        worker_id="w1",
        code="out_of_memory",
        values={"width": 512, "height": 768},
    )
    failed = await (await client.get(f"/v1/jobs/{job['id']}", headers=AUTH)).json()
    assert failed["state"] == "failed" and failed["error"].startswith("out of GPU memory")
    assert failed["error_code"] == "out_of_memory"
    assert failed["error_values"] == {"width": 512, "height": 768}
    events = await client.get(f"/v1/jobs/{job['id']}/events", headers=AUTH)
    assert '"error_code": "out_of_memory"' in await events.text()


async def test_a_cancelled_job_says_cancelled(client):
    job = await (await submit(client, PARAMS)).json()
    cancelled = await (await client.delete(f"/v1/jobs/{job['id']}", headers=AUTH)).json()
    assert cancelled["state"] == "cancelled" and cancelled["error_code"] == "cancelled"


@pytest.mark.parametrize(
    ("params", "field", "code", "values"),
    [
        (
            {"mixed_precision": "fp16"},
            "mixed_precision",
            "train_precision_unsupported",
            {"value": "fp16"},
        ),
        (
            {"optimizer": "Adafactor"},
            "optimizer",
            "train_param_invalid",
            {"name": "optimizer", "value": "Adafactor"},
        ),
        pytest.param(
            {"optimizer": "AdamW8bit"},
            "optimizer",
            "train_param_invalid",
            {"name": "optimizer", "value": "AdamW8bit"},
            marks=pytest.mark.skipif(
                importlib.util.find_spec("bitsandbytes") is not None, reason="installed here"
            ),
        ),
        ({"ip": "nobody"}, "ip", "ip_unknown", {"name": "nobody"}),
        ({"dataset": "none"}, "dataset", "dataset_missing", {"name": "none"}),
    ],
)
async def test_a_training_the_workers_would_refuse_is_refused_at_submit_and_leaves_no_version(
    client, config, params, field, code, values
):
    await client.post("/v1/datasets?name=dada&ip=dada", data=mascot_zip(), headers=AUTH)
    request = {"ip": "dada", "dataset": "dada", **params}
    response = await submit(client, request, kind="train", priority="training")
    assert response.status == 400
    body = await response.json()
    assert (body["field"], body["code"], body["values"]) == (field, code, values)
    assert Versions(config).list() == []
    assert client.queue.list_jobs() == []


async def test_fp16_training_is_accepted_when_a_worker_has_a_gpu(client, config, with_config):
    await client.post("/v1/datasets?name=dada&ip=dada", data=mascot_zip(), headers=AUTH)
    gpu = with_config(config, "engine", devices=["cuda:0"])
    request = {"ip": "dada", "dataset": "dada", "mixed_precision": "fp16"}
    job, _ = Service(gpu, client.queue).submit("train", request, "u")
    assert job.params["mixed_precision"] == "fp16"


async def test_the_default_precision_trains_on_a_cpu_only_service(client):
    """First run on a laptop: /train with no precision is accepted, and runs in float32."""
    await client.post("/v1/datasets?name=dada&ip=dada", data=mascot_zip(), headers=AUTH)
    response = await submit(client, {"ip": "dada", "dataset": "dada"}, kind="train")
    assert response.status == 201, await response.text()
    assert (await response.json())["params"]["mixed_precision"] == "auto"


@pytest.mark.parametrize(
    ("asked", "device", "bf16", "used"),
    [
        ("auto", "cpu", False, "no"),
        ("auto", "cuda", False, "fp16"),
        ("auto", "cuda", True, "bf16"),
        ("fp16", "cuda", True, "fp16"),
        ("no", "cuda", True, "no"),
    ],
)
def test_auto_precision_is_what_the_device_trains_best_in(asked, device, bf16, used):
    assert resolve_precision(asked, device, bf16) == used


@pytest.mark.parametrize(
    ("status", "code"), [("failed", "version_failed"), (None, "version_unknown")]
)
async def test_an_xyz_of_a_failed_or_unknown_version_is_refused_at_submit(
    client, config, status, code
):
    if status is not None:
        versions = Versions(config)
        record = versions.begin("dada", {"epochs": 1})
        versions.update(record["name"], status=status)
    response = await submit(client, {"ip": "dada", "axes": {"versions": "v1"}}, kind="xyz")
    assert response.status == 400
    body = await response.json()
    assert (body["code"], body["values"]) == (code, {"version": "dada-v1"})
    assert client.queue.list_jobs() == []


def test_every_kind_has_a_check_a_runner_and_a_timeout(engine_config):
    assert set(KINDS) == {"txt2img", "img2img", "extras", "train", "xyz"}
    for kind in KINDS.values():
        assert callable(kind.load_runner())
        assert kind.timeout_s(engine_config) > 0
