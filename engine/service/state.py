"""What the service's views share: config, queue, registry, workers, credentials, and the one
path by which every job is checked and queued.

Never imports torch: a job's request is checked by its kind's check (`engine.service.kinds`),
which runs without it.
"""

from __future__ import annotations

import time
from typing import Any

from engine.diffusion.registry import Registry
from engine.service.kinds import job_kind
from engine.service.queue_base import JobQueueBase
from engine.service.queue_common import Job, Priority, State
from engine.service.shared_files import ensure_job
from engine.service.supervisor import Supervisor
from engine.service.watcher import JobWatcher
from posterbot.config import Config


class Service:
    """The engine service's state, shared by every view."""

    def __init__(
        self,
        config: Config,
        queue: JobQueueBase,
        supervisor: Supervisor | None = None,
        token: str | None = None,
        api_auth: str | None = None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.supervisor = supervisor
        self.token = token or None
        self.api_auth = api_auth or None
        self.registry = Registry(config)
        self.started_at = time.time()
        self.watcher = JobWatcher(self.read_events, queue.wait_for_changes)

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        user: str,
        priority: Priority = Priority.USER,
        idempotency_key: str | None = None,
    ) -> tuple[Job, bool]:
        """Check a job as its worker will run it and queue it; returns the job and whether it
        is new (a repeated idempotency key returns the earlier job)."""
        checked = job_kind(kind).check(self.config, self.registry, params)
        before = time.time()
        job = self.queue.submit(
            kind,
            checked.params,
            user,
            priority=priority,
            idempotency_key=idempotency_key,
            batch_key=checked.batch_key,
        )
        return job, job.created_at >= before

    def job_json(self, job: Job) -> dict[str, Any]:
        """A job as docs/engine-api.md shows it."""
        return {
            "id": job.id,
            "kind": job.kind,
            "state": job.state.value,
            "user": job.user,
            "priority": job.priority.name.lower(),
            "params": job.params,
            "position": self.queue.position(job.id) if job.state == State.QUEUED else None,
            "progress": job.progress,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "outputs": job.outputs,
            "info": job.info,
            "error": job.error,
            "error_code": "cancelled" if job.state == State.CANCELLED else job.error_code,
            "error_values": {} if job.state == State.CANCELLED else job.error_values,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }

    def job_event(self, job: Job, positions: dict[str, int]) -> dict[str, Any] | None:
        """The event that describes a job's state now (None while running before step 1);
        `positions` are `queue.positions()`, read once for every followed job."""
        if job.state == State.QUEUED:
            return {"type": "queued", "position": positions.get(job.id)}
        if job.state == State.RUNNING:
            return None if job.progress is None else {"type": "progress", **job.progress}
        return {"type": job.state.value, "job": self.job_json(job)}

    def health(self) -> tuple[bool, dict[str, Any]]:
        workers = self.supervisor.status() if self.supervisor else []
        ok = bool(workers) and all(worker["alive"] for worker in workers)
        counts = self.queue.counts()
        return ok, {
            "ok": ok,
            "workers": workers,
            "queue_depth": counts[State.QUEUED],
            "running": counts[State.RUNNING],
        }

    def base_model(self) -> dict[str, Any]:
        ref = self.registry.checkpoint(None)
        return {"name": ref.name, "hash": self.registry.model_hash(ref), "default": True}

    def models(self) -> list[dict[str, Any]]:
        """The configured base model first, then models/Stable-diffusion."""
        base = self.base_model()
        others = [
            {"name": ref.name, "hash": self.registry.model_hash(ref), "default": False}
            for ref in self.registry.checkpoints()
            if ref.name != base["name"]
        ]
        return [base, *others]

    def loras(self) -> list[dict[str, Any]]:
        root = self.config.loras_dir
        return [
            {
                "name": name,
                "hash": self.registry.lora_hash(path),
                "path": str(path.relative_to(root)),
            }
            for name, path in self.registry.loras().items()
        ]

    def read_events(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each job's current event (jobs running before their first step have none yet)."""
        jobs = self.queue.get_many(job_ids)
        # followers fetch the files next: a remote worker's are here now (a LoRA installed)
        if any([ensure_job(self.config, job) for job in jobs if job.finished]):
            jobs = self.queue.get_many(job_ids)
        queued = any(job.state == State.QUEUED for job in jobs)
        positions = self.queue.positions() if queued else {}
        events = {job.id: self.job_event(job, positions) for job in jobs}
        return {job_id: event for job_id, event in events.items() if event is not None}
