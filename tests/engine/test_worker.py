"""Worker processes under the real service: batching, crashes, signals, cancel, timeouts, OOM.

The crash tests kill real processes with real signals (see conftest.LiveService); the OOM test
runs the retry logic in-process on the tiny engine, since this machine has no GPU to exhaust.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.diffusion.infotext import parse, read_png
from engine.diffusion.params import from_request
from engine.service.devices import visible_gpu_count, worker_devices
from engine.service.run_posters import GpuOutOfMemory, render_with_retry, split_batch
from tests.engine.conftest import wait_for

pytestmark = pytest.mark.slow

LONG = {"steps": 30}  # ~1 s on this CPU (more when busy): long enough to interrupt mid-render


def output_files(service, seed: int) -> list[Path]:
    return sorted((service.data_dir / "outputs").glob(f"*/*-{seed}.png"))


def test_job_completes_with_pngs_and_info(live_service):
    job = live_service.submit(prompt="a cat", seed=1001, batch_size=2)
    done = live_service.wait_state(job["id"], "done")
    assert done["attempts"] == 1
    assert [Path(p).name.split("-", 1)[1] for p in done["outputs"]] == ["1001.png", "1002.png"]
    assert done["info"]["all_seeds"] == [1001, 1002]
    png = (live_service.data_dir / "outputs" / done["outputs"][0]).read_bytes()
    assert parse(read_png(png))["Seed"] == "1001"


def test_compatible_queued_jobs_run_as_one_batch(live_service):
    blocker = live_service.submit(prompt="busy", **LONG)
    live_service.wait_progress(blocker["id"])
    batch = [live_service.submit(prompt=f"dog {i}", seed=2000 + i) for i in range(3)]
    other = live_service.submit(prompt="different size", width=128, seed=2100)
    finished = [live_service.wait_state(job["id"], "done") for job in [*batch, other]]
    starts = {job["started_at"] for job in finished[:3]}
    assert len(starts) == 1, "the three compatible jobs were claimed together"
    assert finished[3]["started_at"] not in starts
    assert [job["info"]["all_seeds"] for job in finished[:3]] == [[2000], [2001], [2002]]


def test_kill_9_worker_mid_job_completes_exactly_once(live_service):
    job = live_service.submit(prompt="crash me once", seed=3003, **LONG)
    live_service.wait_progress(job["id"])
    os.kill(live_service.worker_pid(), signal.SIGKILL)
    done = live_service.wait_state(job["id"], "done", timeout_s=120)
    assert done["attempts"] == 2
    assert len(done["outputs"]) == 1
    assert len(output_files(live_service, 3003)) == 1, "one set of outputs"


def test_sigterm_requeues_the_job_without_spending_an_attempt(live_service):
    job = live_service.submit(prompt="shut down gently", seed=4004, **LONG)
    live_service.wait_progress(job["id"])
    old_pid = live_service.worker_pid()
    os.kill(old_pid, signal.SIGTERM)
    requeued = live_service.wait_state(job["id"], "queued", timeout_s=30)
    assert requeued["attempts"] == 0 and requeued["progress"] is None
    done = live_service.wait_state(job["id"], "done", timeout_s=120)
    assert done["attempts"] == 1
    assert live_service.worker_pid() != old_pid
    assert len(output_files(live_service, 4004)) == 1


def test_a_job_that_always_crashes_ends_dead_with_its_error(live_service):
    lora = live_service.data_dir / "models" / "Lora" / "broken.safetensors"
    lora.parent.mkdir(parents=True, exist_ok=True)
    lora.write_bytes(b"\xff" * 64)  # not a safetensors file: loading it raises every time
    job = live_service.submit(prompt="boom <lora:broken:1>")
    dead = live_service.wait_state(job["id"], "dead", timeout_s=60)
    assert dead["attempts"] == 2
    assert "broken.safetensors" in dead["error"] and "none left" in dead["error"]
    assert dead["outputs"] == []


def test_cancel_a_running_job_stops_it_between_steps(live_service):
    job = live_service.submit(prompt="never mind", seed=5005, steps=150)
    live_service.wait_progress(job["id"])
    status, cancelling = live_service.request("DELETE", f"/v1/jobs/{job['id']}")
    assert status == 200 and cancelling["state"] in ("running", "cancelled")
    cancelled = live_service.wait_state(job["id"], "cancelled", timeout_s=10)
    assert cancelled["progress"]["step"] < 150
    assert output_files(live_service, 5005) == []


def test_a_job_past_its_time_limit_fails_and_its_worker_restarts(live_service):
    old_pid = live_service.worker_pid()
    job = live_service.submit(prompt="too slow", steps=150, n_iter=16)  # minutes on this CPU
    failed = live_service.wait_state(job["id"], "failed", timeout_s=60)
    assert "took longer than 15 s" in failed["error"]
    assert failed["attempts"] == 1, "failed for good, not retried"
    wait_for(
        lambda: live_service.health()["workers"][0]["pid"] not in (None, old_pid),
        what="a new worker process",
    )


# -- out of GPU memory: in-process on the tiny engine ---------------------------------------------


class SmallGpu:
    """The real tiny engine behind a GPU that runs out of memory above `capacity` images."""

    def __init__(self, engine, capacity: int) -> None:
        self.engine = engine
        self.capacity = capacity
        self.calls: list[int] = []

    def generate_batch(self, jobs, progress=None, cancelled=None):
        images = sum(job.batch_size for job in jobs)
        self.calls.append(images)
        if images > self.capacity:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.engine.generate_batch(jobs, progress, cancelled)


def checked(config, **request):
    return from_request(request, config.generation, config.limits)


def test_out_of_memory_retries_once_with_half_batches(engine, engine_config):
    params = checked(engine_config, prompt="a fox", seed=70, batch_size=4)
    gpu = SmallGpu(engine, capacity=2)
    (result,) = render_with_retry(gpu, [params], lambda *a: None, lambda: False)
    assert gpu.calls == [4, 2, 2]
    assert result.seeds == [70, 71, 72, 73]
    whole = engine.txt2img(params)
    for ours, reference in zip(result.images, whole.images, strict=True):
        assert np.abs(np.asarray(ours, float) - np.asarray(reference, float)).max() <= 2
    assert result.infotexts == whole.infotexts


def test_out_of_memory_twice_fails_with_a_clear_message(engine, engine_config):
    params = checked(engine_config, prompt="a fox", batch_size=2)
    with pytest.raises(GpuOutOfMemory, match="out of GPU memory rendering 64x64"):
        render_with_retry(SmallGpu(engine, capacity=0), [params], lambda *a: None, lambda: 0)


def test_split_batch_keeps_each_image_seed_and_variation_seed(engine_config):
    params = checked(engine_config, prompt="x", seed=10, subseed=5, batch_size=3, n_iter=2)
    pieces = split_batch(params)
    assert [(p.seed, p.batch_size) for p in pieces] == [(10, 2), (12, 1), (13, 2), (15, 1)]
    varied = checked(engine_config, prompt="x", seed=10, subseed=5, batch_size=2,
                     subseed_strength=0.5)  # fmt: skip
    assert [(p.seed, p.subseed) for p in split_batch(varied)] == [(10, 5), (10, 6)]


@pytest.mark.parametrize(
    ("devices", "gpus", "workers"),
    [
        (["auto"], 0, ["cpu"]),
        (["auto"], 1, ["cuda:0"]),
        (["auto"], 3, ["cuda:0", "cuda:1", "cuda:2"]),
        (["cuda:1", "cpu"], 4, ["cuda:1", "cpu"]),
    ],
)
def test_auto_means_one_worker_per_visible_gpu_else_the_cpu(devices, gpus, workers):
    assert worker_devices(devices, gpus) == workers


@pytest.mark.parametrize(
    ("visible", "count"), [(None, 2), ("", 0), ("-1", 0), ("3", 1), ("0,1,2", 3), ("0,-1,1", 1)]
)
def test_visible_gpus_follow_cuda_visible_devices_else_the_device_files(tmp_path, visible, count):
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert visible_gpu_count(environ, tmp_path) == count
