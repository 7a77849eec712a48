"""Pictures and results between hosts through the Valkey queue, no shared folder: the service on
one data folder, a remote worker on another (two hosts), a real valkey-server between them."""

from __future__ import annotations

import base64
import dataclasses
import tarfile
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image, ImageDraw

from engine.diffusion.params import from_request
from engine.service.app import make_app
from engine.service.inputs import open_picture, store_picture
from engine.service.queue_common import LeaseLost, State
from engine.service.queue_redis import RedisQueue
from engine.service.queue_sqlite import JobQueue
from engine.service.shared_files import (
    CHUNK_BYTES,
    SharedFiles,
    collect_outputs,
    service_id,
    shared_files,
    unpack_dataset,
)
from engine.service.state import Service
from engine.service.worker import Worker
from posterbot.config import Config, QueueConfig
from posterbot.errors import Failure
from tests.engine.conftest import AUTH, TOKEN

POSTER = {"title": "圣诞快乐", "targets": [{"name": "小", "width": 320, "height": 480}]}


def picture_b64() -> str:
    image = Image.new("RGB", (64, 64), (200, 40, 40))
    ImageDraw.Draw(image).ellipse((10, 10, 50, 50), fill=(30, 90, 220))
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def host(engine_config: Config, folder: Path, url: str) -> Config:
    """A host's configuration: its own data folder, the shared queue."""
    return dataclasses.replace(engine_config, data_dir=folder, queue=QueueConfig(url=url))


def file_keys(url: str) -> list[bytes]:
    with redis.Redis.from_url(url) as client:
        return sorted(client.scan_iter("posterbot:file:outputs/*"))


@pytest.fixture
def hosts(engine_config: Config, valkey_url: str, tmp_path: Path) -> tuple[Config, Config]:
    return (
        host(engine_config, tmp_path / "service-host", valkey_url),
        host(engine_config, tmp_path / "gpu-host", valkey_url),
    )


@pytest.fixture
def collector(hosts: tuple[Config, Config]) -> Iterator[None]:
    service_host = hosts[0]
    stop = threading.Event()
    thread = threading.Thread(
        target=collect_outputs, args=(service_host, shared_files(service_host), stop)
    )
    thread.start()
    yield
    stop.set()
    thread.join(10)


def wait_for(predicate, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return value


async def test_a_remote_worker_reads_the_picture_and_its_pngs_reach_the_service(
    hosts: tuple[Config, Config], collector: None, engine, valkey_url: str
) -> None:
    from engine.diffusion.generate import Engine

    service_host, gpu_host = hosts
    queue = RedisQueue(valkey_url, service=service_id(service_host))  # as open_queue
    app = make_app(Service(service_host, queue, token=TOKEN))
    request = {"prompt": "x", "seed": 5, "denoising_strength": 0.5, "poster": POSTER}
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        # 1. the service stores the picture on its host and queues the job
        body = {"kind": "img2img", "user": "tg:1", "params": {**request}}
        body["params"]["init_images"] = [picture_b64()]
        response = await client.post("/v1/jobs", json=body, headers=AUTH)
        assert response.status == 201, await response.text()
        job_id = (await response.json())["id"]
        [reference] = queue.get(job_id).params["init_images"]

        # 2. a worker on the other host renders it: the picture comes through Valkey
        worker = Worker(gpu_host, "gpu-host/cpu-1", "cpu", lambda c, m: Engine(c), remote=True)
        worker.run(worker.queue.claim(worker.worker_id, 60, 4))
        done = queue.get(job_id)
        assert done.state == State.DONE, done.error
        assert (gpu_host.inputs_dir / f"{reference[6:]}.png").is_file()

        # 3. its PNG and the poster's PNG and SVG are served from the service's outputs
        [name] = done.outputs
        [[poster]] = done.info["posters"]
        assert name.startswith("remote/gpu-host_cpu-1/") and poster["svg"].startswith("remote/")
        png = await (await client.get(f"/v1/outputs/{name}", headers=AUTH)).read()
        svg = await client.get(f"/v1/outputs/{poster['svg']}", headers=AUTH)
        assert "圣诞快乐" in await svg.text()
        poster_png = await (await client.get(f"/v1/outputs/{poster['png']}", headers=AUTH)).read()
        assert Image.open(BytesIO(poster_png)).size == (320, 480)

    # the same request rendered here from the same picture: the remote one had it intact
    local_ref = store_picture(engine.config, picture_b64(), "init_images[0]")
    params = {k: v for k, v in request.items() if k != "poster"}
    here = engine.txt2img(
        from_request(
            {**params, "init_images": [local_ref]}, engine.config.generation, engine.config.limits
        )
    )
    remote = np.asarray(Image.open(BytesIO(png)).convert("RGB"))
    assert np.array_equal(remote, np.asarray(here.images[0]))
    # filed on the service's disk, gone from the worker's and from Valkey's memory
    wait_for(lambda: not file_keys(valkey_url))
    assert (service_host.outputs_dir / name).read_bytes() == png
    assert not list(gpu_host.outputs_dir.rglob("*.png"))
    queue.close()


def test_a_worker_that_lost_its_lease_ships_nothing(valkey_url: str) -> None:
    with RedisQueue(valkey_url, lease_s=0.3) as queue:
        job = queue.submit("txt2img", {}, "alice")
        queue.claim("slow", 0.3)
        time.sleep(0.4)
        queue.claim("fast", 0.3)  # takes the job over
        with pytest.raises(LeaseLost):
            queue.complete(job.id, ["a.png"], worker_id="slow", files={"a.png": b"slow"})
        assert file_keys(valkey_url) == []
        queue.complete(job.id, ["b.png"], worker_id="fast", files={"b.png": b"fast"})
        assert file_keys(valkey_url) == [b"posterbot:file:outputs/b.png"]


def test_a_picture_gone_from_the_queue_fails_the_job_by_its_code(
    hosts: tuple[Config, Config], valkey_url: str
) -> None:
    service_host, gpu_host = hosts
    reference = store_picture(service_host, picture_b64(), "init_images[0]")
    assert open_picture(gpu_host, reference).size == (64, 64)  # fetched from Valkey
    (gpu_host.inputs_dir / f"{reference[6:]}.png").unlink()
    with redis.Redis.from_url(valkey_url) as client:
        client.delete(f"posterbot:file:inputs/{reference[6:]}.png")  # expired
    with pytest.raises(Failure) as gone:
        open_picture(gpu_host, reference)
    assert gone.value.code == "input_missing"


def test_the_sqlite_queue_refuses_files_its_workers_cannot_send(tmp_path: Path) -> None:
    with JobQueue(tmp_path / "engine.db") as queue:
        job = queue.submit("txt2img", {}, "alice")
        queue.claim("w", 60)
        with pytest.raises(ValueError, match="files"):
            queue.complete(job.id, ["a.png"], files={"a.png": b"x"})
        assert queue.get(job.id).state == State.RUNNING


def test_two_services_on_one_queue_each_collect_their_own_jobs_outputs(
    engine_config: Config, valkey_url: str, tmp_path: Path
) -> None:
    services = [host(engine_config, tmp_path / name, valkey_url) for name in ("north", "south")]
    made: dict[str, list[str]] = {}
    with RedisQueue(valkey_url) as worker_side:
        for config in services:  # each service submits two jobs; a remote worker makes them
            with RedisQueue(valkey_url, service=service_id(config)) as queue:
                for n in range(2):
                    job = queue.submit("txt2img", {"n": n}, "alice")
                    worker_side.claim("gpu", 60)
                    name = f"remote/gpu/{config.data_dir.name}-{n}.png"
                    worker_side.complete(job.id, [name], worker_id="gpu", files={name: b"png"})
                    made.setdefault(config.data_dir.name, []).append(name)
    stop = threading.Event()
    threads = [
        threading.Thread(target=collect_outputs, args=(config, shared_files(config), stop))
        for config in services
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: not file_keys(valkey_url))
    stop.set()
    for thread in threads:
        thread.join(10)
    for config in services:
        filed = sorted(p.relative_to(config.outputs_dir).as_posix() for p in
                       config.outputs_dir.rglob("*.png"))  # fmt: skip
        assert filed == made[config.data_dir.name]


def test_a_dataset_tar_cannot_write_outside_its_folder(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = 3
        tar.addfile(member, BytesIO(b"bad"))
    staging = tmp_path / "datasets" / "staging"
    staging.mkdir(parents=True)
    with pytest.raises(Failure) as refused:
        unpack_dataset(archive, staging, "dada")
    assert refused.value.code == "dataset_missing"
    assert not (tmp_path / "datasets" / "escaped.txt").exists()


def test_a_blob_comes_back_whole_in_chunks_or_not_at_all(valkey_url: str, tmp_path: Path) -> None:
    files = SharedFiles(valkey_url)
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)  # two full pieces and a bit
    (tmp_path / "big.bin").write_bytes(data)
    sha = files.put_blob(tmp_path / "big.bin", 60)
    assert files.get_blob(sha, tmp_path / "back.bin", len(data))
    assert (tmp_path / "back.bin").read_bytes() == data
    assert not files.get_blob(sha, tmp_path / "small.bin", len(data) - 1)  # past the limit
    with redis.Redis.from_url(valkey_url) as client:
        client.set(f"posterbot:file:blob:{sha}:1", b"x" * CHUNK_BYTES)  # not its bytes
    assert not files.get_blob(sha, tmp_path / "bad.bin", len(data))
    assert not (tmp_path / "bad.bin").exists() and not (tmp_path / "small.bin").exists()
