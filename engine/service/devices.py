"""Which devices the workers run on, found without importing torch (the service never does)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def worker_devices(devices: list[str], visible_gpus: int) -> list[str]:
    """`[engine] devices` with "auto" spelled out: every visible GPU (cuda:0, cuda:1, ...), or the
    CPU when there is none. One worker process runs per entry."""
    spelled = []
    for device in devices:
        if device == "auto":
            spelled += [f"cuda:{index}" for index in range(visible_gpus)] or ["cpu"]
        else:
            spelled.append(device)
    return spelled


def visible_gpu_count(environ: Mapping[str, str] = os.environ, dev: Path = Path("/dev")) -> int:
    """CUDA devices this process may use: CUDA_VISIBLE_DEVICES when set, else the NVIDIA device
    files (/dev/nvidia0, ...)."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return len([path for path in dev.glob("nvidia*") if path.name[6:].isdigit()])
    count = 0
    for entry in visible.split(","):
        if not entry.strip() or entry.strip().startswith("-"):
            break  # CUDA ignores the list from the first invalid entry on ("-1" hides all)
        count += 1
    return count
