"""Attaching LoRA files to a loaded pipeline, with a cache of loaded adapters.

Format conversion is diffusers' (`load_lora_weights` reads both the diffusers/peft layout and the
kohya/WebUI `lora_unet_*`/`lora_te_*` layout). This module decides which adapters are active and
at what weight, keeps recently used adapters loaded (reloading a file that changed on disk), and
optionally fuses a set that stays the same between jobs.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from engine.diffusion.registry import Registry
from engine.training.versions import Versions
from prompts.syntax import LoraTag

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppliedLora:
    name: str
    weight: float
    hash: str
    version: str | None = None  # the LoRA version promoted into this file (an IP's slot), if any


def _adapter_name(name: str) -> str:
    # peft adapter names become module attribute keys: no dots or other punctuation.
    return "lora_" + re.sub(r"\W", "_", name)


class LoraSet:
    def __init__(self, pipe, registry: Registry, cache_size: int = 8, fuse: bool = False) -> None:
        self.pipe = pipe
        self.registry = registry
        self.cache_size = cache_size
        self.fuse = fuse
        self._loaded: OrderedDict[str, tuple[Path, float]] = OrderedDict()  # name → (file, mtime)
        self._fused: tuple[tuple[str, float], ...] = ()

    def apply(self, tags: list[LoraTag]) -> list[AppliedLora]:
        """Make exactly `tags` active at their weights; return them with their WebUI hashes."""
        weights: dict[str, float] = {}
        for tag in tags:  # the same LoRA twice adds up, as two WebUI tags would
            weights[tag.name] = weights.get(tag.name, 0.0) + tag.weight
        wanted = tuple(weights.items())
        if self.fuse and wanted == self._fused and wanted:
            return self._describe(weights)
        self._unfuse()
        files = {name: self.registry.lora(name) for name in weights}  # fails before any change
        for name, path in files.items():
            self._load(name, path)
        if not weights:
            if self._loaded:
                self.pipe.disable_lora()
            return []
        self.pipe.enable_lora()
        self.pipe.set_adapters(
            [_adapter_name(n) for n in weights], adapter_weights=list(weights.values())
        )
        if self.fuse:
            self.pipe.fuse_lora(adapter_names=[_adapter_name(n) for n in weights])
            self._fused = wanted
        return self._describe(weights)

    def _describe(self, weights: dict[str, float]) -> list[AppliedLora]:
        applied = []
        for name, weight in weights.items():
            digest = self.registry.lora_hash(self._loaded[name][0])
            applied.append(AppliedLora(name, weight, digest, self._version_in(name, digest)))
        return applied

    def _version_in(self, name: str, digest: str) -> str | None:
        """The promoted version whose file this is (an IP's slot holds a copy of one)."""
        version = Versions(self.registry.config).promoted_into(name)
        if version is None or not version.get("file") or not Path(version["file"]).is_file():
            return None
        same = self.registry.lora_hash(Path(version["file"])) == digest
        return version["name"] if same else None

    def _unfuse(self) -> None:
        if self._fused:
            self.pipe.unfuse_lora()
            self._fused = ()

    def _load(self, name: str, path: Path) -> None:
        mtime = path.stat().st_mtime
        if self._loaded.get(name) == (path, mtime):
            self._loaded.move_to_end(name)
            return
        if name in self._loaded:  # the file changed on disk (a new version was promoted)
            self._delete(name)
        log.info("loading LoRA %s from %s", name, path)
        try:
            with _quiet_beside_other_adapters(bool(self._loaded)):
                self.pipe.load_lora_weights(str(path), adapter_name=_adapter_name(name))
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ValueError(f"lora: {name!r} ({path.name}) could not be loaded: {exc}") from exc
        self._loaded[name] = (path, mtime)
        while len(self._loaded) > self.cache_size:
            self._delete(next(iter(self._loaded)))

    def _delete(self, name: str) -> None:
        # Deleting an active adapter makes peft pick another and warn that it did; `apply` sets
        # the active set itself, so hand peft the others first.
        others = [_adapter_name(n) for n in self._loaded if n != name]
        if others:
            self.pipe.set_adapters(others)
        self.pipe.delete_adapters([_adapter_name(name)])
        del self._loaded[name]


@contextmanager
def _quiet_beside_other_adapters(others_loaded: bool) -> Iterator[None]:
    """Silence two false alarms of loading an adapter beside others, which both still apply.

    transformers' `load_adapter` (integrations/peft.py, 5.x) counts as expected every parameter
    whose name contains the adapter's name or the peft type "lora", so each adapter already on
    the text encoder (`...lora_A.lora_x.weight` while loading `lora_x_full`) is reported as a
    "LOAD REPORT ... MISSING" table. peft warns "Already found a `peft_config` attribute" for a
    second adapter, which is what we want. The first adapter's load is left as it is, so a file
    that really lacks keys is still reported.
    """
    if not others_loaded:
        yield
        return
    report_logger = logging.getLogger("transformers.integrations.peft")
    level = report_logger.level
    report_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Already found a `peft_config`", UserWarning)
            yield
    finally:
        report_logger.setLevel(level)
