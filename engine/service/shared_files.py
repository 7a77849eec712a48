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

- One collector per service: a job records the service that submitted it (`service_id`, its
  host and data folder), and its completion lists it under that service's `collect:<service>`,
  so two services on one queue each file their own jobs' outputs, and only theirs.
- Training: the dataset goes out as one tar of its folder (`share_dataset`), stored as a
  content-addressed blob; the worker fetches and unpacks it once into `datasets/shared-<sha>`
  (`fetch_dataset`). The LoRA files it trains come back as blobs too (`ship_loras`), named in
  the job's info; the collector installs them in the service's models/Lora as a new version of
  the service's own registry, once per job (`install_loras`), and rewrites the job's `version`
  and `file` to that version's.

Blobs (files too large for one value) are stored in CHUNK_BYTES pieces under
`file:blob:<sha256>:<i>`, then `file:blob:<sha256>` (`{"size", "chunks"}`, written last, so a
blob with a head is whole); the reader checks the size and the hash before using the bytes.

Keys, under the queue's prefix: `file:<inputs|outputs>/<name>` (strings with a TTL),
`file:blob:…`, `collect:<service>` (list of job ids whose files wait; `collect` for jobs no
service submitted), `collecting:<service>` (the one being written: a service that died
mid-write finds it there), and the job hash's `files` field (their names, JSON).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import re
import shutil
import socket
import tarfile
import tempfile
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
# Valkey answers one command at a time: a 100 MB SET holds every claim and heartbeat behind it
# for the whole transfer, and values stop at 512 MB. 8 MiB pieces take a few milliseconds each
# on a LAN, so other clients wait that long at most, while the per-command overhead stays small
# (a 2 GiB dataset is 256 commands).
CHUNK_BYTES = 8 * 2**20
MAX_DATASET_BYTES = 2 * 2**30  # what a worker accepts unpacked or packed; more is not a LoRA set
MAX_DATASET_FILES = 20_000
SHARED_DATASET = "shared-"  # datasets/shared-<sha>: a dataset another host sent
DATASET_KEY = "dataset_sha256"  # in a train job's params: the dataset's blob, to fetch
LORAS_KEY = "loras"  # in a train job's info: [{"epoch", "sha256", "size"}] shipped by a worker


def service_id(config: Config) -> str:
    """The name the jobs a service submits are addressed back to: its host and data folder,
    the same after a restart (a service that restarts still collects what it submitted)."""
    folder = hashlib.sha256(str(config.data_dir.resolve()).encode()).hexdigest()[:8]
    return f"{_SAFE.sub('_', socket.gethostname())}-{folder}"


def file_sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


class SharedFiles:
    """The file keys of a queue server; thread-safe (the client's connection pool)."""

    def __init__(self, url: str, owner: str = "", prefix: str = "posterbot") -> None:
        """`owner`: the service whose jobs' outputs this collects (`service_id`)."""
        import redis

        self.redis = redis.Redis.from_url(url)  # bytes in, bytes out
        self.owner = owner
        self.prefix = prefix

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def put(self, name: str, data: bytes, ttl_s: int) -> None:
        self.redis.set(self._key("file", name), data, ex=ttl_s)

    def get(self, name: str) -> bytes | None:
        return self.redis.get(self._key("file", name))

    def put_blob(self, path: Path, ttl_s: int) -> str:
        """Store a file in CHUNK_BYTES pieces by its sha256 (returned); one stored already is
        only renewed."""
        sha = file_sha256(path)
        size = path.stat().st_size
        keys = [self._key("file", "blob", sha, str(i)) for i in range(self._chunks(size))]
        head = self._key("file", "blob", sha)
        pipe = self.redis.pipeline()
        for key in [head, *keys]:
            pipe.expire(key, ttl_s)
        if all(pipe.execute()):
            return sha
        with path.open("rb") as file:
            for key in keys:
                self.redis.set(key, file.read(CHUNK_BYTES), ex=ttl_s)
        self.redis.set(head, json.dumps({"size": size, "chunks": len(keys)}), ex=ttl_s)
        return sha

    def get_blob(self, sha: str, target: Path, max_bytes: int) -> bool:
        """Write blob `sha` to `target`, checked; False if it is gone, incomplete, larger than
        `max_bytes` or not what its hash says (nothing is written then)."""
        head = self.redis.get(self._key("file", "blob", sha))
        if head is None:
            return False
        size = json.loads(head)["size"]
        if size > max_bytes:
            return False
        digest, written = hashlib.sha256(), 0
        try:
            with atomic_path(target) as scratch, scratch.open("wb") as out:
                for i in range(self._chunks(size)):
                    data = self.redis.get(self._key("file", "blob", sha, str(i)))
                    written += len(data or b"")
                    if data is None or written > size:
                        raise _Broken
                    digest.update(data)
                    out.write(data)
                if written != size or digest.hexdigest() != sha:
                    raise _Broken
        except _Broken:
            return False
        return True

    def drop_blob(self, sha: str, size: int) -> None:
        keys = [self._key("file", "blob", sha, str(i)) for i in range(self._chunks(size))]
        self.redis.delete(self._key("file", "blob", sha), *keys)

    @staticmethod
    def _chunks(size: int) -> int:
        return max(1, math.ceil(size / CHUNK_BYTES))

    def _mine(self, name: str) -> str:
        return self._key(name, self.owner) if self.owner else self._key(name)

    def waiting(self) -> list[str]:
        """Jobs a collector took but did not finish writing (it died): write them first."""
        found = self.redis.lrange(self._mine("collecting"), 0, -1)
        return [job_id.decode() for job_id in found]

    def take(self, timeout_s: float) -> str | None:
        """The next of this service's jobs whose output files wait, moved to `collecting`; None
        after timeout_s."""
        job_id = self.redis.blmove(
            self._mine("collect"), self._mine("collecting"), timeout_s, "LEFT", "RIGHT"
        )
        return None if job_id is None else job_id.decode()

    def job(self, job_id: str) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
        """A job's submitting service, params and info, as its record holds them now."""
        fields = self.redis.hmget(self._key("job", job_id), "service", "params", "info")
        service, params, info = (None if f is None else f.decode() for f in fields)
        return service or "", json.loads(params or "{}"), None if info is None else json.loads(info)

    def set_info(self, job_id: str, info: dict[str, Any]) -> None:
        """Rewrite a finished job's info (the version it was installed as); followers re-read."""
        self.redis.hset(self._key("job", job_id), "info", json.dumps(info))
        self.redis.publish(self._key("events"), job_id)

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
        pipe.lrem(self._mine("collecting"), 0, job_id)
        pipe.execute()


class _Broken(Exception):
    """A blob that is not whole: its pieces expired, or its bytes are not its hash's."""


@functools.cache
def _shared(url: str, owner: str) -> SharedFiles:
    return SharedFiles(url, owner)


def shared_files(config: Config) -> SharedFiles | None:
    """The file store of a queue shared by hosts (`[queue] url = redis://…`), else None."""
    url = config.queue.url
    shared = url.startswith(("redis://", "rediss://"))
    return _shared(url, service_id(config)) if shared else None


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


def _remote_folder(worker_id: str) -> str:
    return f"{REMOTE_DIR}/{_SAFE.sub('_', worker_id)}/"


def share_outputs(config: Config, worker_id: str, names: list[str]) -> list[str]:
    """Put files a remote worker shows while its job runs (a training's epoch curve and
    samples) on the queue's server under the names the service will serve them by
    (`remote/<worker>/…`; `ensure_output` fetches one when it is asked for); returns them."""
    files = shared_files(config)
    if files is None:
        return names
    shared = []
    for name in names:
        remote = _remote_folder(worker_id) + name
        files.put(f"outputs/{remote}", (config.outputs_dir / name).read_bytes(), OUTPUT_TTL_S)
        shared.append(remote)
    return shared


def ship(
    outputs_dir: Path, worker_id: str, outputs: list[str], info: dict[str, Any] | None
) -> tuple[list[str], dict[str, Any] | None, dict[str, bytes]]:
    """A remote worker's result as the service files it: the outputs and info with every name
    under `remote/<worker>/`, and each file's bytes by that name."""
    folder = _remote_folder(worker_id)
    files = {
        folder + name: (outputs_dir / name).read_bytes() for name in result_names(outputs, info)
    }
    moved = set(outputs)  # info that names an output (a training's loss curve, samples)
    info = info and {
        key: (
            folder + value
            if isinstance(value, str) and value in moved
            else [folder + v if v in moved else v for v in value]
            if isinstance(value, list) and all(isinstance(v, str) for v in value)
            else value
        )
        for key, value in info.items()
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
    """Write one completed job's shipped files under the outputs folder (and install the LoRA
    a training shipped), then free them."""
    shipped = files.files_of(job_id)
    for name, data in shipped.items():
        write_output(config, name, data)
    install_loras(config, files, job_id)
    files.collected(job_id, list(shipped))


def ensure_job(config: Config, job: Any) -> bool:
    """Make sure a finished job's results are on this host before anyone is told (its files,
    a remote training's version); True when its record changed (read it again)."""
    for name in result_names(job.outputs, job.info):
        ensure_output(config, name)
    files = shared_files(config)
    if files is None or not (job.info or {}).get(LORAS_KEY):
        return False
    return install_loras(config, files, job.id)


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


# -- training: the dataset out, the LoRA back --------------------------------------------------


def share_dataset(config: Config, params: dict[str, Any]) -> dict[str, Any]:
    """A train job's params with its dataset stored on the queue's server for a worker on
    another host (DATASET_KEY: the sha256 of its tar); unchanged with the SQLite queue."""
    files = shared_files(config)
    if files is None:
        return params
    folder = config.datasets_dir / params["dataset"]
    with tempfile.TemporaryDirectory(prefix=".outgoing-", dir=config.datasets_dir) as scratch:
        archive = Path(scratch) / "dataset.tar"
        pack_dataset(folder, archive)
        return {**params, DATASET_KEY: files.put_blob(archive, INPUT_TTL_S)}


def pack_dataset(folder: Path, archive: Path) -> None:
    """The folder's files as a tar of their names and bytes only (sorted, no times, owners or
    links), so the same dataset is the same blob and is stored once."""
    with tarfile.open(archive, "w") as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            member = tarfile.TarInfo(path.relative_to(folder).as_posix())
            member.size = path.stat().st_size
            with path.open("rb") as file:
                tar.addfile(member, file)


def fetch_dataset(config: Config, sha: str, name: str) -> str:
    """The dataset a service on another host sent, unpacked under this host's datasets/ once
    (by its hash: a second training on it fetches nothing); its name here. `name` is the
    service's, for the failure."""
    from engine.training.layout import new_staging, publish

    local = f"{SHARED_DATASET}{sha[:48]}"
    target = config.datasets_dir / local
    if target.is_dir():
        return local
    files = shared_files(config)
    staging = new_staging(config)
    archive = staging.with_name(f"{staging.name}.tar")
    try:
        if files is None or not files.get_blob(sha, archive, MAX_DATASET_BYTES):
            raise Failure(
                f"the dataset {name} this training reads is no longer stored; train again",
                "dataset_missing",
                name=name,
            )
        unpack_dataset(archive, staging, name)
        try:
            publish(staging, target, replace=False)
        except ValueError:  # another worker of this host unpacked it first
            if not target.is_dir():
                raise
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    return local


def unpack_dataset(archive: Path, staging: Path, name: str) -> None:
    """Unpack a dataset's tar into `staging`: regular files only, none outside it (tarfile's
    "data" filter refuses absolute names, `..` and links), within the size and count limits."""
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            if (
                len(members) > MAX_DATASET_FILES
                or sum(member.size for member in members) > MAX_DATASET_BYTES
                or not all(member.isfile() for member in members)
            ):
                raise tarfile.TarError("more, larger or other than a dataset's files")
            tar.extractall(staging, filter="data")
    except tarfile.TarError as exc:
        raise Failure(
            f"the dataset {name} arrived unusable ({exc})", "dataset_missing", name=name
        ) from None


def ship_loras(config: Config, result: dict[str, Any]) -> list[dict[str, Any]]:
    """A training's LoRA files (each saved epoch's, and the final one) stored as blobs for the
    service; their names, hashes and sizes for the job's info (LORAS_KEY)."""
    files = shared_files(config)
    paths = {Path(name) for name in [*result["epoch_files"], result["file"]] if name}
    assert files is not None, "only a worker on the shared queue ships LoRA files"
    return [
        {
            "name": path.name,
            "sha256": files.put_blob(path, OUTPUT_TTL_S),
            "size": path.stat().st_size,
        }
        for path in sorted(paths)
    ]


def install_loras(config: Config, files: SharedFiles, job_id: str) -> bool:
    """A remote training's LoRA files as a version of this service's registry, named as a
    training here would be (`<ip>-vN`, files under models/Lora/<ip>/). Once per job: the
    version records the job, so a second look (or a collector that died half way) finds it
    instead of adding one; then the job's info names it. Only the service that submitted the
    job installs; True when the record changed."""
    from engine.training.versions import MAX_LORA_BYTES, Versions, check_lora_file

    service, params, info = files.job(job_id)
    if service != files.owner or not info or not info.get(LORAS_KEY):
        return False
    shipped, made = info[LORAS_KEY], info["version"]  # the worker's own name for the run
    ip = params["ip"]

    def install(name: str) -> dict[str, Any]:
        placed = {}
        for blob in shipped:
            target = config.loras_dir / ip / (name + blob["name"][len(made) :])
            if not files.get_blob(blob["sha256"], target, MAX_LORA_BYTES):
                raise LookupError(f"{blob['name']} is no longer stored")
            check_lora_file(target)
            placed[blob["name"]] = target
        curve = info.get("loss_curve")
        return {
            "status": info["status"],
            "file": str(placed[info["file"]]) if info.get("file") else None,
            "final_loss": info["final_loss"],
            "epochs_done": info["epochs_done"],
            "loss_curve": str(config.outputs_dir / curve) if curve else None,
        }

    trained = {key: value for key, value in params.items() if key != DATASET_KEY}
    kept = {key: value for key, value in info.items() if key != LORAS_KEY}
    try:
        record = Versions(config).adopt(job_id, ip, trained, install)
        kept |= {"version": record["name"], "file": Path(record["file"] or "").name or None}
    except (LookupError, ValueError) as exc:  # expired (a service down for a week) or broken
        log.error("job %s: its LoRA cannot be installed: %s", job_id, exc)
    files.set_info(job_id, kept)
    for blob in shipped:
        files.drop_blob(blob["sha256"], blob["size"])
    return True
