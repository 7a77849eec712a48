"""A real `posterbot worker` process on the Valkey queue rides out the server being killed and
restarted from its AOF: idle, and in the middle of a render; it says so in words and never
exits for it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.service.queue_common import State
from engine.service.queue_redis import RedisQueue
from tests.engine.conftest import REPO, wait_for
from tests.valkey import ValkeyServer

pytestmark = pytest.mark.slow

OUTAGE_S = 3.0
LEASE_S = 20  # longer than the outage: the worker keeps its job across it


def write_worker_config(folder: Path, model: Path, url: str) -> Path:
    path = folder / "config.toml"
    path.write_text(
        f'data_dir = "{folder / "data"}"\n'
        f'[models]\nbase = "{model}"\n'
        '[generation]\nwidth = 64\nheight = 64\nsteps = 2\nsampler_name = "Euler a"\n'
        f"[engine]\nlease_s = {LEASE_S}\npoll_s = 0.1\nprogress_s = 0.1\n"
        f'[queue]\nurl = "{url}"\npool = "sd15"\n',
        encoding="utf-8",
    )
    return path


def test_a_remote_worker_rides_out_a_valkey_restart(tiny_model: Path, tmp_path: Path) -> None:
    server = ValkeyServer(tmp_path / "valkey").start()
    log_path = tmp_path / "worker.log"
    config = write_worker_config(tmp_path, tiny_model, server.url)
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with log_path.open("ab") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "posterbot", "--config", str(config), "worker", "--device",
             "cpu", "--pool", "sd15"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    queue = RedisQueue(server.url, pool="sd15")
    try:
        # 1. it works, then the server dies under the idle worker and comes back
        first = queue.submit("txt2img", {"prompt": "before", "seed": 1}, "alice")
        wait_for(lambda: queue.get(first.id).state == State.DONE, 120, "the first job")
        server.kill()
        time.sleep(OUTAGE_S)
        assert worker.poll() is None, log_path.read_text()
        server.start()  # same port and folder: the AOF is read back
        second = queue.submit("txt2img", {"prompt": "after", "seed": 2}, "alice")
        wait_for(lambda: queue.get(second.id).state == State.DONE, 60, "the second job")

        # 2. the server dies in the middle of a render: the result is recorded once it is back
        long = queue.submit("txt2img", {"prompt": "during", "seed": 3, "steps": 40}, "bob")
        wait_for(lambda: queue.get(long.id).progress, 60, "the render to start")
        server.kill()
        time.sleep(OUTAGE_S)
        assert worker.poll() is None, log_path.read_text()
        server.start()
        wait_for(lambda: queue.get(long.id).state == State.DONE, 60, "the long job")
        done = queue.get(long.id)
        assert (done.attempts, len(done.outputs)) == (1, 1)
    finally:
        worker.terminate()
        worker.wait(60)
        queue.close()
        server.stop()
    text = log_path.read_text()
    assert text.count("is unreachable") == 2 and text.count("answers again after") == 2, text
    assert "Traceback" not in text, text
