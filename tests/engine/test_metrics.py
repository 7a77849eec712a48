"""/metrics per worker pool on both backends, read back with prometheus-client's parser."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from engine.service.app import make_app
from engine.service.queue_redis import RedisQueue
from engine.service.queue_sqlite import JobQueue
from engine.service.state import Service
from posterbot.config import Config
from tests.engine.conftest import AUTH, TOKEN

SHORT_LEASE_S = 0.3


@pytest.fixture(params=["sqlite", "redis"])
async def client(
    request: pytest.FixtureRequest, engine_config: Config, tmp_path: Path
) -> AsyncIterator[TestClient]:
    if request.param == "sqlite":
        queue = JobQueue(tmp_path / "engine.db", pool="sd15")
    else:
        url = request.getfixturevalue("valkey_url")
        queue = RedisQueue(url, pool="sd15", lease_s=SHORT_LEASE_S)
    config = dataclasses.replace(engine_config, data_dir=tmp_path)
    async with TestClient(TestServer(make_app(Service(config, queue, token=TOKEN)))) as client:
        client.queue = queue
        yield client
    queue.close()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_each_pool_shows_depth_in_flight_reclaimed_dead_and_worker_throughput(client):
    queue = client.queue
    doomed = queue.submit("txt2img", {"i": 0}, "alice", max_attempts=1)
    for i in range(1, 4):
        queue.submit("txt2img", {"i": i}, "alice")
    queue.claim("w0", SHORT_LEASE_S)  # then w0 goes silent: its lease runs out
    time.sleep(SHORT_LEASE_S * 1.5)
    assert [job.id for job in queue.requeue_expired()] == [doomed.id]  # dead: its one attempt
    [done] = queue.claim("w1", 60)
    queue.complete(done.id, [], worker_id="w1")
    queue.claim("w2", 60)  # in flight at the scrape

    response = await client.get("/metrics", headers=AUTH)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    got = samples(await response.text())
    pool = (("pool", "sd15"),)
    assert got["posterbot_pool_depth", pool] == 1
    assert got["posterbot_pool_in_flight", pool] == 1
    assert got["posterbot_pool_reclaimed_total", pool] == 1
    assert got["posterbot_pool_dead_lettered_total", pool] == 1
    assert got["posterbot_worker_jobs_done_total", (("pool", "sd15"), ("worker", "w1"))] == 1
    assert ("posterbot_worker_jobs_done_total", (("pool", "sd15"), ("worker", "w0"))) not in got
    assert got["posterbot_jobs", (("state", "dead"),)] == 1
    assert got["posterbot_job_run_seconds_count", ()] == 2  # the done one and the dead one
