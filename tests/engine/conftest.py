"""Engine service fixtures: a real `posterbot engine` process (with its real worker process)
on 127.0.0.1, shared by the real-process tests, and helpers to drive it with plain HTTP.

Starting a worker costs ~5-10 s on this CPU (torch import + model load), so one service serves
the whole session; tests that kill or restart it leave it running again.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.service.queue_sqlite import JobQueue
from tests.valkey import ValkeyServer

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API_AUTH = ("webui", "secret")
START_TIMEOUT_S = 90.0  # a worker imports torch and loads the model; slow on a busy 2-core box
# Short lease and timeout so crash tests take seconds; 64x64 and 2 steps so jobs take ~0.1 s.
LIVE_ENGINE = {
    "devices": ["cpu"],
    "lease_s": 2,
    "job_timeout_s": 15,
    "max_attempts": 2,
    "poll_s": 0.1,
    "progress_s": 0.1,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder: Path, model: Path, **engine: Any) -> Path:
    """A config.toml for a test service (TOML written by hand: values are simple)."""
    engine_lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in engine.items())
    path = folder / "config.toml"
    path.write_text(
        f'data_dir = "{folder / "data"}"\n'
        f'[models]\nbase = "{model}"\n'
        '[generation]\nwidth = 64\nheight = 64\nsteps = 2\nsampler_name = "Euler a"\n'
        f"[engine]\n{engine_lines}\n",
        encoding="utf-8",
    )
    return path


def wait_for(predicate, timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class LiveService:
    """`python -m posterbot engine` in a subprocess, with HTTP helpers."""

    def __init__(self, folder: Path, model: Path) -> None:
        self.folder = folder
        self.config_path = write_config(folder, model, **LIVE_ENGINE)
        self.data_dir = folder / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = open(folder / "service.log", "ab")  # noqa: SIM115 (kept open across restarts)

    def start(self) -> None:
        env = os.environ | {
            "POSTERBOT_ENGINE_TOKEN": TOKEN,
            "POSTERBOT_API_AUTH": ":".join(API_AUTH),
            "PYTHONPATH": str(REPO),
            # Many torch processes share 2 cores here: spinning OpenMP threads would starve them.
            "OMP_NUM_THREADS": "1",
        }
        command = [sys.executable, "-m", "posterbot", "--config", str(self.config_path)]
        self.process = subprocess.Popen(
            [*command, "engine", "--port", str(self.port)],
            cwd=REPO,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self) -> dict[str, Any]:
        """Wait until the service answers and its worker has loaded the model."""

        def ready() -> dict[str, Any] | None:
            assert self.process.poll() is None, f"service exited; see {self.folder}/service.log"
            try:
                health = self.health()
            except OSError:
                return None
            return health if all(w["ready"] for w in health["workers"]) else None

        return wait_for(ready, START_TIMEOUT_S, "the service and its worker to be ready")

    def health(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:  # 503 while a worker restarts
            return json.load(exc)

    def worker_pid(self) -> int:
        return self.wait_ready()["workers"][0]["pid"]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)

    def queue(self) -> JobQueue:
        return JobQueue(self.data_dir / "engine.db")

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """(status, JSON body); bearer auth unless `headers` say otherwise."""
        headers = {"Authorization": f"Bearer {TOKEN}"} if headers is None else headers
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)

    def submit(self, **params: Any) -> dict[str, Any]:
        status, job = self.request("POST", "/v1/jobs", {"params": params, "user": "tg:1"})
        assert status == 201, job
        return job

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}")[1]

    def wait_state(self, job_id: str, *states: str, timeout_s: float = 60.0) -> dict[str, Any]:
        return wait_for(
            lambda: (job := self.job(job_id))["state"] in states and job,
            timeout_s,
            f"job {job_id} to be {'/'.join(states)}",
        )

    def wait_progress(self, job_id: str) -> dict[str, Any]:
        """Wait until the job is running and has done at least one denoising step."""
        return wait_for(
            lambda: (job := self.job(job_id))["progress"] and job["state"] == "running" and job,
            START_TIMEOUT_S,
            f"job {job_id} to be mid-render",
        )


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="session")
def live_service(tmp_path_factory, tiny_model):
    service = LiveService(tmp_path_factory.mktemp("service"), tiny_model)
    service.start()
    yield service
    if service.process.poll() is None:
        service.stop()
    service.log.close()


@pytest.fixture
async def client(config):
    """The engine's HTTP app in-process over the test module's `config`; the test plays the
    worker through `client.queue`."""
    from aiohttp.test_utils import TestClient, TestServer

    from engine.service.app import make_app
    from engine.service.queue_sqlite import open_queue
    from engine.service.state import Service

    queue = open_queue(config)
    app = make_app(Service(config, queue, token=TOKEN))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        client.queue = queue
        yield client
    queue.close()


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    """One real valkey-server for the session (AOF on); `valkey_url` empties it per test."""
    server = ValkeyServer(tmp_path_factory.mktemp("valkey")).start()
    yield server
    server.stop()


@pytest.fixture
def valkey_url(valkey_server: ValkeyServer) -> str:
    """The session's Valkey server, emptied for this test."""
    with redis.Redis.from_url(valkey_server.url) as client:
        client.flushdb()
    return valkey_server.url
