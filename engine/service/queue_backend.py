"""Which queue backend a process opens: `[queue] url` decides (see `queue_base.py`).

Apart from the base so that neither backend imports the other, and a host without a Redis
client still opens its SQLite queue.
"""

from __future__ import annotations

from engine.service.queue_base import JobQueueBase
from posterbot.config import Config


def open_queue(config: Config, workers: int = 1, pool: str | None = None) -> JobQueueBase:
    """The queue `[queue] url` names, with the [engine] limits; `workers` feeds the retry-after
    estimate, `pool` the worker pool this process claims from (default `[queue] pool`)."""
    url = config.queue.url
    if url.startswith(("redis://", "rediss://")):
        from engine.service.queue_redis import open_redis_queue

        return open_redis_queue(config, workers=workers, pool=pool)
    from engine.service.queue_sqlite import open_queue as open_sqlite_queue

    return open_sqlite_queue(config, workers=workers)
