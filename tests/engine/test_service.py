"""The HTTP service: auth, validation, limits, jobs, events, outputs, metrics.

Most tests run the aiohttp app in-process with no workers and play the worker's part through the
queue, so they are fast and exact; the restart test kills the real service process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from safetensors.numpy import save_file

from engine.service.queue_common import State
from posterbot.cli import main
from tests.engine.conftest import AUTH, wait_for

PARAMS = {"prompt": "a cat", "seed": 7}


@pytest.fixture
def config(engine_config, tmp_path, with_config):
    config = dataclasses.replace(engine_config, data_dir=tmp_path)
    return with_config(config, "engine", max_queue=3, max_body_bytes=4096)


async def submit(client, params=PARAMS, **fields):
    body = {"params": params, "user": "tg:1", **fields}
    return await client.post("/v1/jobs", json=body, headers=AUTH)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X": "y"}])
async def test_missing_or_wrong_token_is_401(client, headers):
    for method, path in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/metrics")]:
        response = await client.request(method, path, headers=headers)
        assert response.status == 401
        assert (await response.json())["error"].startswith("auth:")


async def test_healthz_needs_no_token_and_is_503_without_workers(client):
    response = await client.get("/healthz")
    assert response.status == 503
    assert (await response.json())["queue_depth"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"params": {**PARAMS, "steps": 0}, "user": "u"}, "steps"),
        ({"params": {**PARAMS, "sampler_name": "Nope"}, "user": "u"}, "sampler_name"),
        ({"params": {**PARAMS, "width": 65}, "user": "u"}, "width"),
        ({"params": {**PARAMS, "colour": 1}, "user": "u"}, "colour"),
        ({"params": {"seed": 1}, "user": "u"}, "prompt"),
        ({"params": {**PARAMS, "model": "missing-model"}, "user": "u"}, "model"),
        ({"params": {"prompt": "<lora:nobody:1> x"}, "user": "u"}, "lora"),
        ({"params": PARAMS}, "user"),
        ({"params": PARAMS, "user": "u", "priority": "vip"}, "priority"),
        ({"params": PARAMS, "user": "u", "kind": "video"}, "kind"),
        ({"user": "u"}, "params"),
    ],
)
async def test_invalid_submit_is_400_naming_the_field(client, body, field):
    response = await client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"].startswith(f"{field}:")


async def test_body_that_is_not_json_is_400(client):
    response = await client.post("/v1/jobs", data=b"{nope", headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"].startswith("body:")


async def test_oversized_body_is_413(client):
    response = await submit(client, {"prompt": "x" * 5000})
    assert response.status == 413
    assert "engine.max_body_bytes" in (await response.json())["error"]


async def test_full_queue_is_429_with_retry_after(client):
    for n in range(3):
        assert (await submit(client, {"prompt": f"p{n}"})).status == 201
    response = await submit(client)
    assert response.status == 429
    body = await response.json()
    assert body["retry_after_s"] >= 1
    assert response.headers["Retry-After"] == str(body["retry_after_s"])


async def test_submit_stores_checked_params_and_reports_position(client):
    first = await (await submit(client)).json()
    second = await (await submit(client, {"prompt": "a dog"}, priority="admin")).json()
    assert first["state"] == "queued" and first["params"]["steps"] == 4  # config default
    assert first["params"]["model"] is None
    assert second["position"] == 1 and second["priority"] == "admin"
    assert (await (await client.get(f"/v1/jobs/{first['id']}", headers=AUTH)).json())[
        "position"
    ] == 2


async def test_naming_the_base_model_is_the_same_as_naming_none(client):
    job = await (await submit(client, {**PARAMS, "model": "tiny-sd15"})).json()
    assert job["params"]["model"] is None


def test_engine_refuses_a_network_address_without_a_token(tmp_path, monkeypatch):
    monkeypatch.delenv("POSTERBOT_ENGINE_TOKEN", raising=False)
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'data_dir = "{tmp_path}"\n')
    assert main(["--config", str(config_file), "engine", "--host", "0.0.0.0"]) == 2
    assert not (tmp_path / "engine.db").exists(), "refused before opening anything"


async def test_repeated_idempotency_key_returns_the_same_job(client):
    first = await submit(client, idempotency_key="update-42")
    again = await submit(client, idempotency_key="update-42")
    assert (first.status, again.status) == (201, 200)
    assert (await first.json())["id"] == (await again.json())["id"]
    assert client.queue.depth() == 1


async def test_list_filters_by_user_and_state(client):
    await submit(client)
    await client.post("/v1/jobs", json={"params": PARAMS, "user": "tg:2"}, headers=AUTH)
    jobs = (await (await client.get("/v1/jobs?user=tg:2", headers=AUTH)).json())["jobs"]
    assert [job["user"] for job in jobs] == ["tg:2"]
    response = await client.get("/v1/jobs?state=bogus", headers=AUTH)
    assert (await response.json())["error"].startswith("state:")


async def test_unknown_job_is_404(client):
    response = await client.get("/v1/jobs/nope", headers=AUTH)
    assert response.status == 404


async def test_cancel_a_queued_job_at_once(client):
    job = await (await submit(client)).json()
    cancelled = await (await client.delete(f"/v1/jobs/{job['id']}", headers=AUTH)).json()
    assert cancelled["state"] == "cancelled"
    assert client.queue.depth() == 0


def play_worker(queue, job_id: str, outputs: list[str], pause_s: float = 1.0) -> None:
    """Do what a worker does to a job, slowly enough for an event stream to see each step
    (slow enough that a busy machine does not merge two steps into one event)."""
    time.sleep(pause_s)
    (job,) = queue.claim("fake-worker", lease_s=30)
    assert job.id == job_id
    for step in (1, 2):
        time.sleep(pause_s)
        queue.set_progress(job_id, step, 2, "txt2img")
    time.sleep(pause_s)
    queue.complete(job_id, outputs, {"all_seeds": [7]}, worker_id="fake-worker")


async def test_events_arrive_in_order_and_end_with_done(client):
    job = await (await submit(client)).json()
    worker = threading.Thread(target=play_worker, args=(client.queue, job["id"], ["a.png"]))
    worker.start()
    response = await client.get(f"/v1/jobs/{job['id']}/events", headers=AUTH)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    text = (await response.read()).decode()
    await asyncio.to_thread(worker.join)
    blocks = [block for block in text.split("\n\n") if block.startswith("event:")]
    names = [block.split("\n")[0].removeprefix("event: ") for block in blocks]
    assert names == ["queued", "progress", "progress", "done"]
    assert '"step": 1' in blocks[1] and '"step": 2' in blocks[2]
    assert '"outputs": ["a.png"]' in blocks[3]


def event_names_and_data(text: str) -> list[tuple[str, dict]]:
    blocks = [block.split("\n") for block in text.split("\n\n") if block.startswith("event:")]
    return [(b[0].removeprefix("event: "), json.loads(b[1].removeprefix("data: "))) for b in blocks]


async def test_many_streams_over_several_jobs_each_see_their_own_job(client):
    jobs = [await (await submit(client, {**PARAMS, "seed": i})).json() for i in range(3)]
    urls = [f"/v1/jobs/{job['id']}/events" for job in jobs for _ in range(20)]
    responses = await asyncio.gather(*(client.get(url, headers=AUTH) for url in urls))
    # 1. before any work: every stream says where its job waits
    firsts = await asyncio.gather(*(r.content.readuntil(b"\n\n") for r in responses))
    for index, first in enumerate(firsts):
        assert event_names_and_data(first.decode()) == [
            ("queued", {"type": "queued", "position": index // 20 + 1})
        ]

    # 2. the jobs run one after another; every stream ends with its own job done
    def work() -> None:
        for job in jobs:
            play_worker(client.queue, job["id"], [f"{job['id']}.png"], pause_s=0.1)

    worker = threading.Thread(target=work)
    worker.start()
    rests = await asyncio.gather(*(r.read() for r in responses))
    await asyncio.to_thread(worker.join)
    for index, rest in enumerate(rests):
        name, final = event_names_and_data(rest.decode())[-1]
        assert name == "done"
        assert final["job"]["outputs"] == [f"{jobs[index // 20]['id']}.png"]


def test_upscalers_are_listed_without_loading_torch(config):
    """The service process never imports torch (its workers do): checked in a fresh process."""
    script = f"""
import asyncio, json, sys
from aiohttp.test_utils import TestClient, TestServer
from engine.service.app import make_app
from engine.service.queue_sqlite import open_queue
from engine.service.state import Service
from posterbot.config import load_config

async def main():
    config = load_config(None, environ={{"POSTERBOT_DATA_DIR": {str(config.data_dir)!r}}})
    app = make_app(Service(config, open_queue(config)))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        names = [u["name"] for u in await (await client.get("/sdapi/v1/upscalers")).json()]
    print(json.dumps({{"names": names, "torch": "torch" in sys.modules}}))

asyncio.run(main())
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert "Latent" in answer["names"] and "Lanczos" in answer["names"]
    assert answer["torch"] is False


async def test_outputs_are_served_and_nothing_outside_them(client, config):
    folder = config.outputs_dir / "2026-11-25"
    folder.mkdir(parents=True)
    (folder / "00001-7.png").write_bytes(b"\x89PNG fake")
    (config.data_dir / "secret.png").write_bytes(b"secret")
    response = await client.get("/v1/outputs/2026-11-25/00001-7.png", headers=AUTH)
    assert response.status == 200 and await response.read() == b"\x89PNG fake"
    for path in ["../secret.png", "..%2Fsecret.png", "%2e%2e/secret.png", "../engine.db"]:
        response = await client.get(f"/v1/outputs/{path}", headers=AUTH)
        assert response.status == 404, path


async def test_models_and_loras_are_listed_with_hashes(client, config):
    models = (await (await client.get("/v1/models", headers=AUTH)).json())["models"]
    assert models[0]["name"] == "tiny-sd15" and models[0]["default"] is True
    assert len(models[0]["hash"]) == 10
    config.loras_dir.mkdir(parents=True)
    save_file(
        {"lora_unet_x.alpha": np.ones(1, np.float32)}, config.loras_dir / "dada_v1.safetensors"
    )
    loras = (await (await client.get("/v1/loras", headers=AUTH)).json())["loras"]
    assert [(lora["name"], len(lora["hash"])) for lora in loras] == [("dada_v1", 12)]


async def test_metrics_are_prometheus_text(client):
    job = await (await submit(client)).json()
    await submit(client, {"prompt": "another"})
    await asyncio.to_thread(play_worker, client.queue, job["id"], [], 0)
    text = await (await client.get("/metrics", headers=AUTH)).text()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples["posterbot_queue_depth", ()] == 1
    assert samples["posterbot_jobs", (("state", "done"),)] == 1
    assert samples["posterbot_job_wait_seconds_count", ()] == 1
    assert samples["posterbot_job_run_seconds_bucket", (("le", "+Inf"),)] == 1


@pytest.mark.slow
def test_queued_jobs_survive_kill_9_of_the_service(live_service):
    # different step counts: three separate jobs, not one batch
    jobs = [live_service.submit(prompt=f"survivor {n}", steps=30 + n) for n in range(3)]
    live_service.wait_progress(jobs[0]["id"])
    worker_pid = live_service.worker_pid()
    live_service.kill()
    with live_service.queue() as queue:
        assert [queue.get(job["id"]).state for job in jobs[1:]] == [State.QUEUED] * 2
    live_service.start()
    finished = [live_service.wait_state(job["id"], "done", timeout_s=120) for job in jobs]
    assert [len(job["outputs"]) for job in finished] == [1, 1, 1]
    # the orphaned worker noticed its service was gone and exited
    wait_for(lambda: process_gone(worker_pid), 30, "the orphaned worker to exit")


def process_gone(pid: int) -> bool:
    """True when `pid` has exited (a zombie nobody reaped counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def test_a_port_in_use_is_one_line_naming_the_port_and_the_setting(tmp_path, tiny_model):
    import socket

    from tests.engine.conftest import write_config

    config = write_config(tmp_path, tiny_model)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "posterbot",
                "--config",
                str(config),
                "engine",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in run.stderr
    assert "engine.port" in run.stderr and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
