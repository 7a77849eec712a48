"""Engine input hardening (issue #15): what a request may hold is refused at submission, by a 400
(or 413) naming the field, never a 500 and never a worker stuck on it later.

The HTTP app runs in-process over this module's `config` (no worker: accepted jobs just queue);
the cancellation test renders on the tiny model.
"""

from __future__ import annotations

import pytest

from engine.diffusion.params import from_request
from engine.service.queue_common import QueueFull
from engine.service.queue_sqlite import MAX_RETRY_AFTER_S, JobQueue
from tests.engine.conftest import AUTH
from tests.training.conftest import config_for


@pytest.fixture
def config(engine_config, tmp_path, with_config):
    """A training-ready data folder (IP dada) whose only worker is on the CPU; room to queue."""
    config = with_config(config_for(engine_config, tmp_path / "data"), "engine", devices=["cpu"])
    return with_config(config, "engine", max_queue=1000)


async def job(client, params: dict, kind: str = "txt2img"):
    body = {"kind": kind, "params": params, "user": "tg:1"}
    return await client.post("/v1/jobs", json=body, headers=AUTH)


async def refusal(response, status: int = 400) -> dict:
    assert response.status == status, await response.text()
    return await response.json()


def request(**fields) -> dict:
    return {"prompt": "a cat", **fields}


# -- 5. cancelling before the first step ------------------------------------------------------


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
