"""LoRA versions of each IP: `<ip>-vN`, promote, rollback, register an outside file, export.

Files live where WebUI looks for LoRAs, so a version is usable in prompts by its name
(`<lora:dada-v3:0.8>`, the XYZ grid) and the folder can be copied to a WebUI install:

    models/Lora/dada/dada-v3.safetensors       a version (kohya layout, ss_* metadata)
    models/Lora/dada/dada-v3-000004.safetensors its per-epoch files
    models/Lora/dada_v3.safetensors            what posters use: `[[ips]] lora = "dada_v3"`

Promote copies the chosen version over the IP's configured LoRA file (temp file + rename, so a
reader never sees half a file). The engine notices the file changed on disk and reloads it, so
the next poster uses the promoted version without a restart or a config change. Promoting the
version in use changes nothing; rollback promotes the version that was promoted before, always
another one. The registry (parameters, final loss, status,
promotion history per IP) is one JSON file, written under a file lock by whoever changes it
(a training worker, the HTTP service, the CLI).
"""

from __future__ import annotations

import fcntl
import json
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.diffusion.registry import refuse_pickle
from posterbot.config import Config, IPConfig
from posterbot.errors import Refusal
from posterbot.files import atomic_copy, atomic_write_text

MAX_LORA_BYTES = 2 * 2**30  # the largest SDXL LoRAs are ~1.7 GB; anything bigger is not one
LORA_KEY_MARKERS = (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.")


class Versions:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.path = config.data_dir / "training" / "versions.json"

    # --- the registry file -----------------------------------------------------------------------

    @contextmanager
    def _locked(self):
        """Read-modify-write the registry under an exclusive lock; yields the data dict."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            atomic_write_text(self.path, json.dumps(data, indent=2, ensure_ascii=False))

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"versions": [], "promoted": {}}

    def list(self, ip: str | None = None) -> list[dict[str, Any]]:
        """Versions (oldest first) with parameters, final loss, status and which is promoted."""
        data = self._read()
        current = {name: history[-1] for name, history in data["promoted"].items() if history}
        return [
            {**v, "promoted": current.get(v["ip"]) == v["name"]}
            for v in data["versions"]
            if ip is None or v["ip"] == ip
        ]

    def get(self, name: str) -> dict[str, Any]:
        for version in self.list():
            if version["name"] == name:
                return version
        raise ValueError(f"version: no version named {name!r}")

    def promoted(self, ip: str) -> str | None:
        history = self._read()["promoted"].get(ip) or []
        return history[-1] if history else None

    def promoted_into(self, lora: str) -> dict[str, Any] | None:
        """The version last promoted into the LoRA file `lora` (an IP's `lora`), if any."""
        for ip in self.config.ips:
            name = self.promoted(ip.name) if ip.lora == lora else None
            if name is not None:
                return self.get(name)
        return None

    def _add(self, data: dict, ip: str, **fields: Any) -> dict[str, Any]:
        numbers = [v["number"] for v in data["versions"] if v["ip"] == ip]
        number = max(numbers, default=0) + 1
        record = {
            "name": f"{ip}-v{number}",
            "ip": ip,
            "number": number,
            "created_at": time.time(),
            "status": "running",
            "file": None,
            "final_loss": None,
            **fields,
        }
        data["versions"].append(record)
        return record

    # --- training runs ---------------------------------------------------------------------------

    def begin(self, ip: str, params: dict[str, Any]) -> dict[str, Any]:
        """A new version for a training run (status "running"); older unfinished runs of the IP
        are marked "interrupted" (only one trains at a time per IP)."""
        with self._locked() as data:
            for version in data["versions"]:
                if version["ip"] == ip and version["status"] == "running":
                    version["status"] = "interrupted"
            return self._add(data, ip, source="trained", params=params)

    def unfinished(self, ip: str, params: dict[str, Any]) -> dict[str, Any] | None:
        """The running (crashed) version of `ip` trained with exactly `params`, to resume."""
        for version in reversed(self._read()["versions"]):
            unfinished = version["status"] in ("running", "failed")
            if version["ip"] == ip and unfinished and version.get("params") == params:
                return version
        return None

    def adopt(
        self, job: str, ip: str, params: dict[str, Any], install: Callable[[str], dict[str, Any]]
    ) -> dict[str, Any]:
        """The version a training on another host made for queue job `job`, registered once:
        the version that records the job if there is one, else a new one whose files
        `install(name)` puts in place, returning its fields (status, file, final loss...)."""
        with self._locked() as data:
            for version in data["versions"]:
                if version.get("job") == job:
                    return version
            record = self._add(data, ip, source="trained", params=params, job=job)
            record |= install(record["name"])
            return record

    def update(self, name: str, **fields: Any) -> None:
        with self._locked() as data:
            for version in data["versions"]:
                if version["name"] == name:
                    version.update(fields)
                    return
        raise ValueError(f"version: no version named {name!r}")

    # --- outside files ---------------------------------------------------------------------------

    def register(self, ip: IPConfig, source: Path, note: str = "") -> dict[str, Any]:
        """Add a LoRA `.safetensors` made elsewhere (another trainer, WebUI) as a new version.

        Pickle files (.ckpt/.pt/...) are refused unread; the file must be a safetensors file
        whose tensors are LoRA weights (kohya or diffusers/peft layout).
        """
        source = Path(source)
        metadata = check_lora_file(source)
        with self._locked() as data:
            record = self._add(data, ip.name, source="registered", note=note or source.name)
            target = self.config.loras_dir / ip.name / f"{record['name']}.safetensors"
            atomic_copy(source, target)
            record |= {
                "status": "done",
                "file": str(target),
                "params": {k: v for k, v in metadata.items() if k.startswith("ss_")},
            }
            return record

    # --- promote / rollback / export -------------------------------------------------------------

    def promote(self, ip: IPConfig, name: str) -> dict[str, Any]:
        """Make version `name` what the IP's posters use; returns the version with `changed`
        (False: it was the promoted one already, and nothing was copied or recorded, so the
        next rollback still goes back to the version before it)."""
        target = self._target(ip)
        with self._locked() as data:
            version = self._usable(data, ip.name, name)
            history = data["promoted"].setdefault(ip.name, [])
            if history and history[-1] == name:
                return {**version, "changed": False}
            if not history and target.exists():
                # The file in use before the first promote becomes a version: rollback reaches it.
                before = self._add(data, ip.name, source="previous", note=f"{target.name} before")
                kept = self.config.loras_dir / ip.name / f"{before['name']}.safetensors"
                atomic_copy(target, kept)
                before |= {"status": "done", "file": str(kept)}
                history.append(before["name"])
            atomic_copy(Path(version["file"]), target)
            history.append(name)
            return {**version, "changed": True}

    def rollback(self, ip: IPConfig) -> dict[str, Any]:
        """Promote the version that was promoted before the current one (another version:
        repeats recorded by older releases are skipped); returns it with `changed`. Refused
        (`version_no_rollback`) when there is none."""
        target = self._target(ip)
        with self._locked() as data:
            history = data["promoted"].get(ip.name) or []
            current = history[-1] if history else None
            earlier = [name for name in history if name != current]
            if not earlier:
                raise Refusal(
                    "ip",
                    f"{ip.name} has no earlier promoted version to roll back to",
                    "version_no_rollback",
                    ip=ip.name,
                    version=current or "-",
                )
            while history[-1] == current:
                history.pop()
            version = self._usable(data, ip.name, history[-1])
            atomic_copy(Path(version["file"]), target)
            return {**version, "changed": True}

    def export(self, name: str) -> Path:
        """The WebUI-layout file of a version (what /export sends)."""
        version = self.get(name)
        if not version.get("file") or not Path(version["file"]).exists():
            raise ValueError(f"version: {name} has no file (status {version['status']})")
        return Path(version["file"])

    def _target(self, ip: IPConfig) -> Path:
        if not ip.lora:
            raise ValueError(
                f"ips[{ip.name}].lora: empty; set the LoRA file name posters use "
                f'(e.g. lora = "{ip.name}_lora") before promoting'
            )
        if re.fullmatch(rf"{re.escape(ip.name)}-v\d+(-\d+)?", ip.lora):
            raise ValueError(
                f"ips[{ip.name}].lora: {ip.lora!r} is a version name; use a name of its own"
            )
        return self.config.loras_dir / f"{ip.lora}.safetensors"

    @staticmethod
    def _usable(data: dict, ip: str, name: str) -> dict[str, Any]:
        for version in data["versions"]:
            if version["name"] == name and version["ip"] == ip:
                if not version.get("file") or not Path(version["file"]).exists():
                    raise ValueError(f"version: {name} has no file (status {version['status']})")
                return version
        raise Refusal("version", f"{ip} has no version {name!r}", "version_unknown", version=name)


def version_name(ip: str, text: str) -> str:
    """`v3` or `3` → `dada-v3`; a full name stays."""
    text = text.strip()
    if text.isdigit():
        return f"{ip}-v{text}"
    return f"{ip}-{text}" if text.startswith("v") and text[1:].isdigit() else text


def check_lora_file(path: Path) -> dict[str, str]:
    """Refuse anything but a safetensors LoRA; return its metadata (ss_* for kohya files)."""
    from safetensors import SafetensorError, safe_open

    refuse_pickle(path, "lora")
    if path.suffix.lower() != ".safetensors":
        raise ValueError(f"lora: {path.name} is not a .safetensors file")
    if path.stat().st_size > MAX_LORA_BYTES:
        raise ValueError(f"lora: {path.name} is larger than {MAX_LORA_BYTES} bytes, not a LoRA")
    try:
        with safe_open(str(path), framework="pt") as file:
            keys = list(file.keys())
            metadata = file.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"lora: {path.name} is not a readable safetensors file ({exc})") from None
    if not keys or not any(marker in key for key in keys for marker in LORA_KEY_MARKERS):
        raise ValueError(
            f"lora: {path.name} has no LoRA weights (lora_down/lora_up or lora_A/lora_B keys); "
            "is it a full checkpoint?"
        )
    return metadata
