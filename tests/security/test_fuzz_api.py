"""Property-based fuzz of the bodies anyone with the token can send: `POST /v1/jobs` (every job
kind) and WebUI's `POST /sdapi/v1/txt2img`, with random JSON values of every type in every known
field, unknown fields, huge and non-finite numbers, NaN-like strings and nested lists.

Whatever comes in, the answer is a 2xx, or a 4xx whose JSON body names a field; never a 5xx, and
the service still answers `/healthz` afterwards. The app runs in-process; a stand-in worker
completes accepted jobs at once (with no images), so WebUI requests return and the queue stays
short. Derandomized: the same examples on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine.diffusion.params import GenerationParams
from engine.service.kinds import XYZ_FIELDS
from engine.service.webui import WEBUI_PARAM_FIELDS, WEBUI_UNSUPPORTED
from engine.training.params import TrainParams
from tests.engine.conftest import AUTH
from tests.training.conftest import config_for

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
MAX_ERROR_CHARS = 400  # a refusal quotes at most ~300 characters of what it refuses

TXT2IMG_FIELDS = [f.name for f in dataclasses.fields(GenerationParams)] + ["model", "poster"]
TRAIN_FIELDS = [f.name for f in dataclasses.fields(TrainParams)]
WEBUI_FIELDS = [
    *WEBUI_PARAM_FIELDS,
    *WEBUI_UNSUPPORTED,
    "sampler_index",
    "scheduler",
    "override_settings",
    "send_images",
    "eta",
]
TRICKY_TEXT = [
    "NaN", "Infinity", "-Infinity", "1e400", "-1", "0", "", " ", "null", "Euler a", "Latent",
    "DPM++ 2M Karras", "dada_lora", "dada_lora:nan", "<lora:dada_lora:nan>", "<lora::1>",
    "a BREAK b", "../../etc/passwd", "达达骑士", "\x00", "\udcff", "v1,v2", "1,2,3", "auto",
]  # fmt: skip
HUGE_NUMBERS = [10**400, -(10**400), 1e308, -1e308, 2**63, 2**64 + 1, 1e-320, 4294967296]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from(HUGE_NUMBERS)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(TRICKY_TEXT)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(TXT2IMG_FIELDS), inner, max_size=4)
    ),
    max_leaves=12,
)


def bodies(fields: list[str], required: dict | None = None):
    """Objects with some known fields (random values) and maybe an unknown one."""
    known = st.dictionaries(st.sampled_from(fields), values, max_size=len(fields))
    unknown = st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=1)
    base = st.fixed_dictionaries(required or {})
    sometimes = st.sampled_from([False, False, False, True])  # an unknown field stops the rest
    return st.tuples(base, known, unknown, sometimes).map(
        lambda parts: {**parts[0], **parts[1], **(parts[2] if parts[3] else {})}
    )


def job_bodies():
    params = st.one_of(
        st.tuples(st.just("txt2img"), bodies(TXT2IMG_FIELDS, {"prompt": st.text(max_size=40)})),
        st.tuples(st.just("txt2img"), bodies(TXT2IMG_FIELDS)),
        st.tuples(st.just("train"), bodies(TRAIN_FIELDS, {"ip": st.just("dada")})),
        st.tuples(st.just("xyz"), bodies(list(XYZ_FIELDS), {"ip": st.just("dada")})),
        st.tuples(values, values),
    )
    usual = st.fixed_dictionaries(  # mostly a valid envelope, so that the params get checked
        {"user": st.just("tg:1")},
        optional={
            "priority": st.sampled_from(["user", "admin", "training"]),
            "idempotency_key": st.text(min_size=1, max_size=8),
        },
    )
    envelope = st.one_of(usual, usual, usual, bodies(["user", "priority", "idempotency_key"]))
    return st.tuples(params, envelope, st.booleans()).map(
        lambda parts: (
            {"kind": parts[0][0], "params": parts[0][1], **parts[1]}
            if parts[2]
            else {"params": parts[0][1], **parts[1]}
        )
    )


@pytest.fixture
def config(engine_config, tmp_path, with_config):
    config = with_config(config_for(engine_config, tmp_path / "data"), "engine", devices=["cpu"])
    return with_config(config, "engine", max_queue=100_000)


@pytest.fixture
async def served(client):
    """The in-process app with a stand-in worker that completes every job at once."""

    async def complete_jobs() -> None:
        while True:
            for job in await asyncio.to_thread(client.queue.claim, "fuzz", 60, 8):
                await asyncio.to_thread(client.queue.complete, job.id, [], {})
            await asyncio.sleep(0.02)

    worker = asyncio.create_task(complete_jobs())
    yield client
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
    health = await client.get("/healthz")
    assert health.status in (200, 503)  # 503: no worker processes in-process, but it answers
    assert "queue_depth" in await health.json()


async def check_answer(response) -> None:
    text = await response.text()
    assert response.status < 500, text
    event(f"HTTP {response.status}")  # --hypothesis-show-statistics: how deep the examples got
    if response.status >= 400:
        body = json.loads(text)
        event(f"refused: {body.get('field')}")
        assert isinstance(body.get("error"), str) and len(body["error"]) <= MAX_ERROR_CHARS, text
        if response.status == 400:
            assert isinstance(body.get("field"), str) and body["field"], text
            assert body["error"].startswith(f"{body['field']}: "), text


def encode(body) -> bytes:
    """JSON as Python writes it: NaN and Infinity as bare words, as some clients send them."""
    return json.dumps(body).encode()


@FUZZ
@given(body=job_bodies())
async def test_fuzzed_jobs_are_answered_with_a_2xx_or_a_4xx_naming_a_field(served, body):
    response = await served.post("/v1/jobs", data=encode(body), headers=AUTH)
    await check_answer(response)


@FUZZ
@given(body=bodies(WEBUI_FIELDS, {"prompt": st.text(max_size=40)}) | bodies(WEBUI_FIELDS))
async def test_fuzzed_webui_txt2img_is_answered_with_a_2xx_or_a_4xx_naming_a_field(served, body):
    response = await served.post("/sdapi/v1/txt2img", data=encode(body), headers=AUTH)
    await check_answer(response)


@FUZZ
@given(body=values)
async def test_any_json_value_as_a_body_is_answered_without_a_5xx(served, body):
    for path in ("/v1/jobs", "/sdapi/v1/txt2img", "/sdapi/v1/png-info", "/v1/posters"):
        await check_answer(await served.post(path, data=encode(body), headers=AUTH))
