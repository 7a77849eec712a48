"""`posterbot queue status` and `posterbot queue dead-letter [requeue ID]` on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.service.queue_backend import open_queue
from engine.service.queue_common import State
from posterbot.cli import main
from posterbot.config import load_config


@pytest.fixture(params=["sqlite", "redis"])
def config_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    url = "" if request.param == "sqlite" else request.getfixturevalue("valkey_url")
    path = tmp_path / "config.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n[queue]\nurl = "{url}"\n', "utf-8")
    return path


def test_a_dead_job_is_listed_with_its_error_and_requeued(config_path: Path, capsys) -> None:
    with open_queue(load_config(config_path, environ={})) as queue:
        job = queue.submit("txt2img", {}, "alice", max_attempts=1)
        queue.claim("w", 60)
        queue.fail(job.id, "CUDA error: an illegal memory access", retry=True)

    assert main(["--config", str(config_path), "queue", "dead-letter", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["id"] == job.id and row["error"].startswith("CUDA error")

    assert main(["--config", str(config_path), "queue", "dead-letter", "requeue", job.id]) == 0
    assert f"{job.id} queued again (position 1)" in capsys.readouterr().out
    assert main(["--config", str(config_path), "queue", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["jobs"][State.QUEUED.value] == 1 and status["jobs"][State.DEAD.value] == 0

    assert main(["--config", str(config_path), "queue", "dead-letter", "requeue", "nope"]) == 2
