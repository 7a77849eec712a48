"""Files across hosts: the pictures a request brings in, and the PNGs (and posters' SVGs) that a
worker on another host makes, carried by the shared queue's server (Valkey/Redis) with the job,
never through a shared filesystem. With the SQLite queue every worker is on the service's host
and nothing travels (`shared_files` is None).

- Inputs: `store_picture` (on the service) also keeps the PNG under `file:inputs/<sha>.png` for
  INPUT_TTL_S, renewed by every request that brings it; `open_picture` on a host without the
  file fetches it, checks its hash and keeps it in that host's `inputs/`.
- Outputs: a remote worker (`posterbot worker`) completes a job with its files' bytes
  (`ship`). The queue's completion script stores them with the result, in the same step, so a
  worker whose lease was lost stores nothing, and lists the job under `collect`; the service's
  collector (`collect_outputs`) writes them under its `outputs/` and deletes them from the
  server. Their names start `remote/<worker>/`, so two hosts numbering files alike never
  collide. An output read before the collector got to it is taken from the server at once
  (`ensure_output`).

Keys, under the queue's prefix: `file:<inputs|outputs>/<name>` (strings with a TTL),
`collect` (list of job ids whose files wait), `collecting` (the one being written: a service
that died mid-write finds it there), and the job hash's `files` field (their names, JSON).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

from posterbot.config import Config
from posterbot.errors import Failure
from posterbot.files import atomic_path

log = logging.getLogger(__name__)

# A picture must outlive the jobs that read it: queued, run up to max_attempts times, perhaps
# requeued from the dead letters after a fix. A day covers that with room; each request that
# brings the picture again renews it. Kept in the server's memory, so not longer.
INPUT_TTL_S = 24 * 3600
# Outputs wait only for the collector, normally milliseconds; a week covers a service that is
# down for long without leaving them in memory forever.
OUTPUT_TTL_S = 7 * 24 * 3600
REMOTE_DIR = "remote"  # outputs/remote/<worker>/...: what workers on other hosts made
COLLECT_WAIT_S = 1.0  # the collector's blocking read; it notices `stop` this often too
MAX_BACKOFF_S = 30.0
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class SharedFiles:
    """The file keys of a queue server; thread-safe (the client's connection pool)."""

    def __init__(self, url: str, prefix: str = "posterbot") -> None:
        import redis

        self.redis = redis.Redis.from_url(url)  # bytes in, bytes out
        self.prefix = prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def put(self, name: str, data: bytes, ttl_s: int) -> None:
        self.redis.set(self._key("file", name), data, ex=ttl_s)

    def get(self, name: str) -> bytes | None:
        return self.redis.get(self._key("file", name))

    def waiting(self) -> list[str]:
        """Jobs a collector took but did not finish writing (it died): write them first."""
        return [job_id.decode() for job_id in self.redis.lrange(self._key("collecting"), 0, -1)]

    def take(self, timeout_s: float) -> str | None:
        """The next job whose output files wait, moved to `collecting`; None after timeout_s."""
        job_id = self.redis.blmove(
            self._key("collect"), self._key("collecting"), timeout_s, "LEFT", "RIGHT"
        )
        return None if job_id is None else job_id.decode()

    def files_of(self, job_id: str) -> dict[str, bytes]:
        """The output files a job was completed with, by name (those not expired)."""
        names = self.redis.hget(self._key("job", job_id), "files")
        if names is None:
            return {}
        names = json.loads(names)
        blobs = self.redis.mget([self._key("file", f"outputs/{name}") for name in names])
        return {name: blob for name, blob in zip(names, blobs, strict=True) if blob is not None}

    def collected(self, job_id: str, names: list[str]) -> None:
        """The job's files are on the service's disk: free the server's memory."""
        pipe = self.redis.pipeline()
        for name in names:
            pipe.delete(self._key("file", f"outputs/{name}"))
        pipe.hdel(self._key("job", job_id), "files")
        pipe.lrem(self._key("collecting"), 0, job_id)
        pipe.execute()


@functools.cache
def _shared(url: str) -> SharedFiles:
    return SharedFiles(url)


def shared_files(config: Config) -> SharedFiles | None:
    """The file store of a queue shared by hosts (`[queue] url = redis://…`), else None."""
    url = config.queue.url
    return _shared(url) if url.startswith(("redis://", "rediss://")) else None


# -- inputs ------------------------------------------------------------------------------------


def share_input(config: Config, path: Path) -> None:
    """Keep a stored picture on the queue's server too, for workers on other hosts."""
    files = shared_files(config)
    if files is not None:
        files.put(f"inputs/{path.name}", path.read_bytes(), INPUT_TTL_S)


def fetch_input(config: Config, path: Path) -> None:
    """Bring a picture stored on the service's host to this host's `path`: from the queue's
    server, its content checked against its name (the sha256 of its bytes)."""
    files = shared_files(config)
    data = None if files is None else files.get(f"inputs/{path.name}")
    if data is None or hashlib.sha256(data).hexdigest() != path.stem:
        raise Failure(
            f"the picture {path.stem[:12]}… this job reads is no longer stored; send it again",
            "input_missing",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as scratch:
        scratch.write_bytes(data)


# -- outputs -----------------------------------------------------------------------------------


def result_names(outputs: list[str], info: dict[str, Any] | None) -> list[str]:
    """Every file a job's result names: its outputs and its finished posters' PNGs and SVGs."""
    posters = (info or {}).get("posters") or []
    return [*outputs, *(p[kind] for ps in posters for p in ps for kind in ("png", "svg"))]


def ship(
    outputs_dir: Path, worker_id: str, outputs: list[str], info: dict[str, Any] | None
) -> tuple[list[str], dict[str, Any] | None, dict[str, bytes]]:
    """A remote worker's result as the service files it: the outputs and info with every name
    under `remote/<worker>/`, and each file's bytes by that name."""
    folder = f"{REMOTE_DIR}/{_SAFE.sub('_', worker_id)}/"
    files = {
        folder + name: (outputs_dir / name).read_bytes() for name in result_names(outputs, info)
    }
    if info is not None and info.get("posters"):
        info = {
            **info,
            "posters": [
                [{**p, "png": folder + p["png"], "svg": folder + p["svg"]} for p in ps]
                for ps in info["posters"]
            ],
        }
    return [folder + name for name in outputs], info, files


def output_path(config: Config, name: str) -> Path | None:
    """Where an output of this name lives under the outputs folder; None if it would not."""
    root = config.outputs_dir.resolve()
    path = (root / name).resolve()
    return path if path.is_relative_to(root) and path != root else None


def write_output(config: Config, name: str, data: bytes) -> None:
    """File one collected output under the outputs folder (once: names are never reused)."""
    path = output_path(config, name)
    if path is None:
        log.error("refusing to file output %r outside the outputs folder", name)
        return
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as scratch:
            scratch.write_bytes(data)


def ensure_output(config: Config, name: str) -> None:
    """Make sure an output is on this disk: one still waiting for the collector is taken from
    the queue's server now (a client may ask for it the moment its job is done)."""
    path = output_path(config, name)
    files = shared_files(config)
    if path is None or files is None or path.is_file():
        return
    data = files.get(f"outputs/{name}")
    if data is not None:
        write_output(config, name, data)


def file_job(config: Config, files: SharedFiles, job_id: str) -> None:
    """Write one completed job's shipped files under the outputs folder, then free them."""
    shipped = files.files_of(job_id)
    for name, data in shipped.items():
        write_output(config, name, data)
    files.collected(job_id, list(shipped))


def collect_outputs(config: Config, files: SharedFiles, stop: threading.Event) -> None:
    """The service's collector (run it in a thread until `stop`): files what remote workers
    shipped as their jobs complete; rides out the server being away."""
    backoff = 0.5
    pending = None
    while not stop.is_set():
        try:
            if pending is None:
                pending = files.waiting()  # left by a collector that died mid-write
            job_id = pending.pop() if pending else files.take(COLLECT_WAIT_S)
            if job_id is not None:
                file_job(config, files, job_id)
            backoff = 0.5
        except Exception as exc:  # the server away or restarting: wait, then read again
            log.warning(
                "collecting remote workers' outputs failed (%s); trying again in %.0f s",
                exc,
                backoff,
            )
            pending = None
            stop.wait(backoff)
            backoff = min(MAX_BACKOFF_S, backoff * 2)
