"""A real `posterbot worker` process on the Valkey queue rides out the server being killed and
restarted from its AOF: idle, and in the middle of a render; it says so in words and never
exits for it. It trains a LoRA from a dataset only the service's host has, and the LoRA comes
back to the service as one of its versions."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from engine.service.kinds import check_train
from engine.service.queue_common import Priority, State
from engine.service.queue_redis import RedisQueue
from engine.service.shared_files import (
    DATASET_KEY,
    collect_outputs,
    ensure_output,
    service_id,
    shared_files,
)
from engine.training.intake import import_dataset
from engine.training.versions import Versions, check_lora_file
from posterbot.config import Config, QueueConfig
from tests.engine.conftest import REPO, wait_for
from tests.training.conftest import QUICK, TRIGGER, config_for, write_dataset
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
        f'[queue]\nurl = "{url}"\npool = "sd15"\n'
        f'[[ips]]\nname = "dada"\ntrigger = "{TRIGGER}"\nlora = "dada_lora"\n',
        encoding="utf-8",
    )
    return path


def start_worker(config: Path, log_path: Path) -> subprocess.Popen:
    """`posterbot worker` on the CPU in its own process, as on another host."""
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "posterbot", "--config", str(config), "worker", "--device",
             "cpu", "--pool", "sd15"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def test_a_remote_worker_rides_out_a_valkey_restart(tiny_model: Path, tmp_path: Path) -> None:
    server = ValkeyServer(tmp_path / "valkey").start()
    log_path = tmp_path / "worker.log"
    worker = start_worker(write_worker_config(tmp_path, tiny_model, server.url), log_path)
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


def test_a_remote_worker_trains_from_the_services_dataset_and_the_lora_comes_back(
    engine_config: Config, tiny_model: Path, valkey_url: str, tmp_path: Path
) -> None:
    # 1. the service's host has the dataset; the worker's host (its own data folder) does not
    service = dataclasses.replace(
        config_for(engine_config, tmp_path / "service-host"),
        queue=QueueConfig(url=valkey_url, pool="sd15"),
    )
    import_dataset(write_dataset(tmp_path / "raw"), "dada", service, trigger=TRIGGER)
    Versions(service).register(service.find_ip("dada"), lora_file(service))  # dada-v1 exists
    gpu_host = tmp_path / "gpu-host"
    gpu_host.mkdir()
    worker = start_worker(write_worker_config(gpu_host, tiny_model, valkey_url), gpu_host / "log")
    assert not (gpu_host / "data" / "datasets").exists()

    # 2. the service checks and queues the training; its collector runs
    stop = threading.Event()
    collector = threading.Thread(
        target=collect_outputs, args=(service, shared_files(service), stop)
    )
    collector.start()
    params = dict(QUICK, epochs=2, repeats=1, sample_every_n_epochs=0)
    queue = RedisQueue(valkey_url, pool="sd15", service=service_id(service))
    try:
        checked = check_train(service, None, params).params
        job = queue.submit("train", checked, "tg:1", priority=Priority.TRAINING)
        shown = []  # the progress that shows an ended epoch (what the chat sends meanwhile)
        seen = lambda: (p := queue.get(job.id).progress) and "saved_epoch" in p and shown.append(p)  # noqa: E731
        wait_for(lambda: seen() or queue.get(job.id).finished, 300, "the training")
        wait_for(lambda: queue.get(job.id).info["version"] == "dada-v2", 30, "the install")
    finally:
        worker.terminate()
        worker.wait(60)
        stop.set()
        collector.join(10)
        queue.close()
    done = queue.get(job.id)
    assert done.state == State.DONE, (done.error, (gpu_host / "log").read_text())

    # 3. the LoRA is a version of the service's registry, named as a local training's would be
    version = Versions(service).get("dada-v2")
    assert (version["status"], version["job"], version["epochs_done"]) == ("done", job.id, 2)
    assert version["params"]["dataset"] == "dada"
    lora = service.loras_dir / "dada" / "dada-v2.safetensors"
    assert version["file"] == str(lora) and done.info["file"] == lora.name
    assert check_lora_file(lora)["ss_network_dim"] == "4"  # kohya keys and metadata
    assert (service.loras_dir / "dada" / "dada-v2-000001.safetensors").is_file()
    assert (service.outputs_dir / done.info["loss_curve"]).is_file()
    # the epoch's curve shown while it trained is served by the service too (from Valkey)
    epoch_curve = shown[0]["loss_curve"]
    assert shown[0]["saved_epoch"] == 1 and epoch_curve.startswith("remote/")
    ensure_output(service, epoch_curve)
    assert (service.outputs_dir / epoch_curve).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the LoRA blobs are freed; only the dataset stays (for a retry, until its TTL)
    with redis.Redis.from_url(valkey_url) as client:
        heads = {key for key in client.scan_iter("posterbot:file:blob:*") if key.count(b":") == 3}
    assert heads == {f"posterbot:file:blob:{checked[DATASET_KEY]}".encode()}
    # the dataset came to the worker's host, under its hash
    [fetched] = (gpu_host / "data" / "datasets").glob("shared-*")
    assert sorted(p.name for p in fetched.rglob("*.png")) == sorted(
        p.name for p in (service.datasets_dir / "dada").rglob("*.png")
    )
    assert len(Versions(service).list("dada")) == 2


def lora_file(config: Config) -> Path:
    """A LoRA made elsewhere, registered first so the training is not the IP's first version."""
    from diffusers import DiffusionPipeline

    from tests.fakes.models import write_lora_pair

    pipe = DiffusionPipeline.from_pretrained(config.models.base)
    kohya, _ = write_lora_pair(pipe, config.data_dir / "elsewhere", "x")
    return kohya
