"""Train and xyz jobs through the queue on a real worker (in-process, on the tiny model): the
training publishes its loss curve and samples under outputs/, and a poster submitted while the
LoRA trains is rendered between training steps, before the training ends."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from engine.diffusion.grid import xyz_request
from engine.diffusion.params import from_request
from engine.service.queue_common import Priority, State
from engine.service.queue_sqlite import open_queue
from engine.service.worker import Worker
from engine.training.intake import import_dataset
from engine.training.params import check_train_request
from tests.fakes.models import write_lora_pair
from tests.training.conftest import (
    QUICK,
    TRIGGER,
    config_for,
    one_torch_thread,  # noqa: F401 (autouse: one torch thread)
    write_dataset,
)


@pytest.fixture
def config(engine_config, tmp_path, with_config):
    config = with_config(config_for(engine_config, tmp_path / "data"), "engine", poll_s=0.1)
    import_dataset(write_dataset(tmp_path / "raw"), "dada", config, trigger=TRIGGER)
    return config


@pytest.fixture
def queue(config):
    """The queue, with a worker serving it in a thread until the test ends."""
    worker = Worker(config, "cpu#test", "cpu")
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    queue = open_queue(config)
    yield queue
    worker.stopping.set()
    thread.join(60)
    queue.close()


def wait(queue, job_id: str, ready, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = queue.get(job_id)
        if ready(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is {queue.get(job_id).state}")


def test_a_train_job_publishes_its_files_and_posters_render_between_its_steps(config, queue):
    params = dict(QUICK, epochs=1, repeats=4)  # 18 steps: time to ask for a poster
    checked = check_train_request(config, params, {"cpu"}).to_dict()
    train = queue.submit("train", checked, "tg:1", priority=Priority.TRAINING)
    running = wait(queue, train.id, lambda job: job.progress is not None)
    assert running.progress["stage"] == "train" and running.progress["epoch"] == 1
    assert {"loss", "eta_s", "step", "total"} <= set(running.progress)

    poster = from_request({"prompt": "a cat", "seed": 5}, config.generation, config.limits)
    poster_job = queue.submit("txt2img", {**poster.to_dict(), "model": None}, "tg:2")
    drawn = wait(queue, poster_job.id, lambda job: job.finished)
    trained = wait(queue, train.id, lambda job: job.finished)
    assert drawn.state == State.DONE and trained.state == State.DONE, trained.error
    assert drawn.finished_at < trained.finished_at  # rendered between training steps

    info = trained.info
    assert info["version"] == "dada-v1" and info["status"] == "done"
    assert info["final_loss"] > 0 and list(info["epoch_losses"]) == ["1"]
    assert info["file"] == "dada-v1.safetensors"
    assert trained.outputs[0] == info["loss_curve"] == "training/dada-v1/loss.png"
    assert len(info["samples"]) == 2
    for path in trained.outputs:
        Image.open(config.outputs_dir / path).verify()


def test_an_xyz_job_returns_the_labelled_grid(config, engine, tiny_model, request):
    from diffusers import DiffusionPipeline

    with pytest.raises(ValueError, match="weights: dada's LoRA 'dada_lora' is not installed"):
        xyz_request(config, "dada", {"weights": "0.5,1", "seeds": "1,2,3"})
    kohya, _ = write_lora_pair(DiffusionPipeline.from_pretrained(tiny_model), config.loras_dir, "x")
    kohya.rename(config.loras_dir / "dada_lora.safetensors")  # what dada's posters use
    # The worker starts only now: its model loading must not overlap the LoRA's creation
    # (accelerate's empty-weights loading patches torch for every thread while it runs).
    queue = request.getfixturevalue("queue")
    params = xyz_request(config, "dada", {"weights": "0.5,1", "seeds": "1,2,3"})
    job = queue.submit("xyz", params, "tg:1", priority=Priority.ADMIN)
    done = wait(queue, job.id, lambda job: job.finished)
    assert done.state == State.DONE, done.error
    assert done.info["axes"] == ["weights", "seeds"] and len(done.info["cells"]) == 6
    infotexts = [cell["infotext"] for cell in done.info["cells"]]
    assert sum("<lora:dada_lora:0.5>" in text for text in infotexts) == 3  # the IP's own LoRA
    grid = Image.open(io.BytesIO((config.outputs_dir / done.outputs[0]).read_bytes()))
    assert grid.width > 2 * 64 and grid.height > 3 * 64  # 2 columns × 3 rows plus labels
