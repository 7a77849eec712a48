"""`/metrics`: the queue, its worker pools, the workers, and wait and run times, written by
`prometheus-client` from what the queue holds at each scrape (the queue is the source of truth:
several service processes, or a restarted one, report the same figures)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from engine.service.http import blocking, service
from engine.service.queue_common import PoolStats, State
from engine.service.state import Service

HISTOGRAM_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)  # poster ~10 s, training ~h


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: queue depth, jobs by state, pools, workers, wait and run histograms."""
    body = await blocking(prometheus_text, service(request))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def prometheus_text(svc: Service) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(svc))
    return generate_latest(registry)


class QueueCollector:
    """Reads the queue once per scrape and yields every metric family."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        queue = self.svc.queue
        counts = queue.counts()
        yield GaugeMetricFamily(
            "posterbot_queue_depth", "Jobs waiting in the queue.", counts[State.QUEUED]
        )
        jobs = GaugeMetricFamily("posterbot_jobs", "Jobs in the queue by state.", labels=["state"])
        for state, n in counts.items():
            jobs.add_metric([state.value], n)
        yield jobs
        workers = self.svc.supervisor.status() if self.svc.supervisor else []
        yield GaugeMetricFamily(
            "posterbot_workers_alive",
            "Worker processes of this service running.",
            sum(worker["alive"] for worker in workers),
        )
        yield from pool_families(queue.pool_stats(), queue.workers_announced())
        finished = queue.finished_since(self.svc.started_at)  # histograms count from the start
        yield histogram(
            "posterbot_job_wait_seconds",
            "Seconds from submit to the latest claim, of jobs finished since the service started.",
            [job.wait_s for job in finished if job.wait_s is not None],
        )
        yield histogram(
            "posterbot_job_run_seconds",
            "Seconds from the latest claim to the end, of jobs finished since the service started.",
            [job.run_s for job in finished if job.run_s is not None],
        )


def pool_families(stats: list[PoolStats], announced: list[dict[str, Any]]) -> Iterator[Metric]:
    """Per worker pool: depth, in flight, announced workers, reclaimed and dead-lettered totals,
    and the jobs each worker completed (its throughput is their rate)."""
    families = {
        "depth": GaugeMetricFamily(
            "posterbot_pool_depth", "Jobs waiting, per worker pool.", labels=["pool"]
        ),
        "running": GaugeMetricFamily(
            "posterbot_pool_in_flight", "Jobs claimed and not ended, per pool.", labels=["pool"]
        ),
        "workers": GaugeMetricFamily(
            "posterbot_pool_workers",
            "Workers on other hosts that announced themselves lately, per pool.",
            labels=["pool"],
        ),
        "reclaimed": CounterMetricFamily(
            "posterbot_pool_reclaimed",
            "Leases that ran out and were taken back from a worker that stopped renewing them.",
            labels=["pool"],
        ),
        "dead": CounterMetricFamily(
            "posterbot_pool_dead_lettered",
            "Jobs that used up their attempts and went to the dead letters.",
            labels=["pool"],
        ),
        "done": CounterMetricFamily(
            "posterbot_worker_jobs_done",
            "Jobs each worker completed (rate() of it is the worker's throughput).",
            labels=["pool", "worker"],
        ),
    }
    for pool in stats:
        families["depth"].add_metric([pool.pool], pool.queued)
        families["running"].add_metric([pool.pool], pool.running)
        here = sum(worker["pool"] == pool.pool for worker in announced)
        families["workers"].add_metric([pool.pool], here)
        families["reclaimed"].add_metric([pool.pool], pool.reclaimed)
        families["dead"].add_metric([pool.pool], pool.dead_lettered)
        for worker, n in sorted(pool.done_by_worker.items()):
            families["done"].add_metric([pool.pool, worker], n)
    yield from families.values()


def histogram(name: str, help_text: str, values: list[float]) -> HistogramMetricFamily:
    buckets = [(str(bound), sum(v <= bound for v in values)) for bound in HISTOGRAM_BUCKETS_S]
    return HistogramMetricFamily(
        name, help_text, buckets=[*buckets, ("+Inf", len(values))], sum_value=sum(values)
    )
