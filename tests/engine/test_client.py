"""`engine.service.client.EngineClient` against the in-process app: the calls, the errors, the
retries."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import threading

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.service import client as client_module
from engine.service.app import make_app
from engine.service.client import (
    EngineBusy,
    EngineClient,
    EngineError,
    EngineRejected,
    EngineUnavailable,
)
from engine.service.queue_sqlite import open_queue
from engine.service.state import Service
from tests.engine.conftest import REPO, TOKEN, free_port
from tests.engine.test_service import play_worker


@pytest.fixture
def config(engine_config, tmp_path, with_config):
    config = dataclasses.replace(engine_config, data_dir=tmp_path)
    return with_config(config, "engine", max_queue=2)


@pytest.fixture
def queue(config):
    with open_queue(config) as queue:
        yield queue


@pytest.fixture
async def server(config, queue):
    async with TestServer(make_app(Service(config, queue, token=TOKEN)), host="127.0.0.1") as s:
        yield s


@pytest.fixture
async def engine_client(server):
    async with EngineClient(str(server.make_url("")), token=TOKEN, timeout_s=5) as client:
        yield client


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(client_module, "BACKOFF_S", 0.05)


async def test_submit_follow_and_fetch_a_result(engine_client, queue, config):
    job = await engine_client.submit({"prompt": "a cat"}, user="tg:1", idempotency_key="u1")
    assert job["state"] == "queued" and job["position"] == 1
    again = await engine_client.submit({"prompt": "a cat"}, user="tg:1", idempotency_key="u1")
    assert again["id"] == job["id"]
    png = config.outputs_dir / "2026-11-25" / "00000-7.png"
    png.parent.mkdir(parents=True)
    png.write_bytes(b"\x89PNG result")
    worker = threading.Thread(
        target=play_worker, args=(queue, job["id"], ["2026-11-25/00000-7.png"])
    )
    worker.start()
    types = [event["type"] async for event in engine_client.events(job["id"])]
    await asyncio.to_thread(worker.join)
    assert types == ["queued", "progress", "progress", "done"]
    done = await engine_client.wait(job["id"])  # a finished job: one final event
    assert done["state"] == "done" and done["outputs"] == ["2026-11-25/00000-7.png"]
    assert await engine_client.output(done["outputs"][0]) == b"\x89PNG result"
    assert [j["id"] for j in await engine_client.jobs(user="tg:1", state="done")] == [job["id"]]


async def test_cancel_list_models_and_health(engine_client):
    job = await engine_client.submit({"prompt": "a dog"}, user="tg:2")
    assert (await engine_client.cancel(job["id"]))["state"] == "cancelled"
    assert (await engine_client.job(job["id"]))["state"] == "cancelled"
    assert [m["name"] for m in await engine_client.models()] == ["tiny-sd15"]
    assert await engine_client.loras() == []
    health = await engine_client.health()  # 503 without workers is an answer, not an error
    assert health["ok"] is False and health["queue_depth"] == 0


async def test_errors_map_to_their_exceptions(engine_client):
    with pytest.raises(EngineRejected) as rejected:
        await engine_client.submit({"prompt": "x", "steps": 0}, user="tg:1")
    assert rejected.value.field == "steps" and rejected.value.status == 400
    for n in range(2):
        await engine_client.submit({"prompt": f"p{n}"}, user="tg:1")
    with pytest.raises(EngineBusy) as busy:
        await engine_client.submit({"prompt": "one too many"}, user="tg:1")
    assert busy.value.retry_after_s >= 1
    with pytest.raises(EngineError) as missing:
        await engine_client.job("nope")
    assert missing.value.status == 404


async def test_wrong_token_is_an_engine_error_401(server):
    async with EngineClient(str(server.make_url("")), token="wrong") as client:
        with pytest.raises(EngineError) as denied:
            await client.jobs()
    assert denied.value.status == 401


async def test_connection_errors_are_retried_until_the_engine_is_up(config, queue, fast_backoff):
    port = free_port()
    runner = web.AppRunner(make_app(Service(config, queue, token=TOKEN)))
    await runner.setup()

    async def start_late() -> None:
        await asyncio.sleep(0.3)  # the first attempts hit a closed port
        await web.TCPSite(runner, "127.0.0.1", port).start()

    starting = asyncio.create_task(start_late())
    try:
        async with EngineClient(f"http://127.0.0.1:{port}", token=TOKEN, retries=6) as client:
            assert await client.jobs() == []
    finally:
        await starting
        await runner.cleanup()


async def test_unreachable_engine_raises_unavailable_after_the_retries(fast_backoff):
    url = f"http://127.0.0.1:{free_port()}"
    async with EngineClient(url, retries=2) as client:
        with pytest.raises(EngineUnavailable, match="after 3 attempt"):
            await client.jobs()
        # a submit without an idempotency key is never retried: it might queue twice
        with pytest.raises(EngineUnavailable, match="after 1 attempt"):
            await client.submit({"prompt": "x"}, user="tg:1")


def test_client_imports_without_torch():
    code = (
        "import sys; import engine.service.client; "
        "assert not {'torch', 'diffusers'} & set(sys.modules), 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
