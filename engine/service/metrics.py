"""`/metrics`: Prometheus text of the queue, the workers, and wait and run times."""

from __future__ import annotations

from aiohttp import web

from engine.service.http import blocking, service
from engine.service.queue_common import State
from engine.service.state import Service

HISTOGRAM_BUCKETS_S = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)  # poster ~10 s, training ~h


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text: queue depth, jobs by state, workers, wait and run time histograms."""
    svc = service(request)
    text = await blocking(prometheus_text, svc)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


def prometheus_text(svc: Service) -> str:
    counts = svc.queue.counts()
    finished = svc.queue.finished_since(svc.started_at)  # histograms count from service start
    workers = svc.supervisor.status() if svc.supervisor else []
    lines = [
        "# HELP posterbot_queue_depth Jobs waiting in the queue.",
        "# TYPE posterbot_queue_depth gauge",
        f"posterbot_queue_depth {counts[State.QUEUED]}",
        "# HELP posterbot_jobs Jobs in the queue database by state.",
        "# TYPE posterbot_jobs gauge",
        *(f'posterbot_jobs{{state="{state.value}"}} {n}' for state, n in counts.items()),
        "# HELP posterbot_workers_alive Worker processes running.",
        "# TYPE posterbot_workers_alive gauge",
        f"posterbot_workers_alive {sum(worker['alive'] for worker in workers)}",
    ]
    lines += _histogram(
        "posterbot_job_wait_seconds",
        "Seconds from submit to the latest claim, of jobs finished since the service started.",
        [job.wait_s for job in finished if job.wait_s is not None],
    )
    lines += _histogram(
        "posterbot_job_run_seconds",
        "Seconds from the latest claim to the end, of jobs finished since the service started.",
        [job.run_s for job in finished if job.run_s is not None],
    )
    return "\n".join(lines) + "\n"


def _histogram(name: str, help_text: str, values: list[float]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    for bound in HISTOGRAM_BUCKETS_S:
        lines.append(f'{name}_bucket{{le="{bound}"}} {sum(v <= bound for v in values)}')
    lines += [
        f'{name}_bucket{{le="+Inf"}} {len(values)}',
        f"{name}_sum {sum(values):.6f}",
        f"{name}_count {len(values)}",
    ]
    return lines
