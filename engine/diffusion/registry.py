"""Where models live and what they are called: checkpoints, VAEs, LoRAs, upscalers, their hashes.

Folders follow WebUI (`models/Stable-diffusion`, `models/Lora`, `models/VAE`, `models/ESRGAN`), so
the data folder can be an existing WebUI install. Hashes are the ones WebUI shows: the model hash
is the first 10 hex digits of the file's sha256, a LoRA hash the first 12 of the "addnet" hash
(sha256 of the safetensors tensor data, header excluded). Hashes are cached by path, size and
modification time, as WebUI caches them, because hashing a 2 GB checkpoint takes seconds.
No torch here: listing and hashing work on any host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from posterbot.config import Config
from posterbot.errors import Refusal
from posterbot.files import atomic_write_text

log = logging.getLogger(__name__)

# Pickle-based formats run arbitrary code when loaded: refused for checkpoints and LoRAs.
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin", ".pkl"}
UPSCALER_SUFFIXES = {".safetensors", ".pth"}  # spandrel reads .pth with a restricted unpickler
DEMO_MODEL_NAME = "posterbot-demo"
DEMO_MARKER = "posterbot_demo.json"  # in a tiny model's folder: outputs from it say "demo model"
HASH_BLOCK = 1 << 20
# torch.save's format before zip files (PyTorch < 1.6): a pickle that starts with this magic number
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."


@dataclass(frozen=True)
class ModelRef:
    """A base model to load: a diffusers folder, a single .safetensors file, or a hub id."""

    name: str
    location: str  # folder or file path, or hub id
    kind: str  # "folder" | "file" | "hub"
    is_demo: bool = False


def is_sdxl(ref: ModelRef) -> bool | None:
    """Whether a base model is SDXL, read from its files without loading it (None: a hub id,
    which cannot be told before it is downloaded)."""
    if ref.kind == "folder":
        index = json.loads((Path(ref.location) / "model_index.json").read_text(encoding="utf-8"))
        return "XL" in str(index.get("_class_name", ""))
    if ref.kind == "file":
        from safetensors import safe_open

        with safe_open(ref.location, framework="np") as checkpoint:  # the header only
            keys = checkpoint.keys()  # a safe_open handle is not a dict
            return any(key.startswith("conditioner.embedders.1.") for key in keys)
    return None


def _folder_ref(path: Path) -> ModelRef:
    return ModelRef(path.name, str(path), "folder", is_demo=(path / DEMO_MARKER).exists())


def _converted(checkpoint: Path) -> bool:
    """Whether `posterbot models fetch` wrote a diffusers folder beside this file: the folder
    then stands for it (same name, and the name loads the folder)."""
    return (checkpoint.with_suffix("") / "model_index.json").exists()


def refuse_pickle(path: Path, what: str) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ValueError(
            f"{what}: {path.name} is a pickle file ({path.suffix}), which can run code when "
            "loaded; only .safetensors files are loaded (convert it to .safetensors first)"
        )


def check_weights_file(path: Path, field: str) -> None:
    """Refuse a spandrel weights file that is not what its suffix says (a pickle renamed
    .safetensors, a bare pickle as .pth) from its first bytes, before a worker loads it; a .pth
    that passes still meets spandrel's restricted unpickler there."""
    from safetensors import SafetensorError, safe_open

    if path.suffix == ".safetensors":
        try:
            with safe_open(path, framework="np"):  # the header only
                return
        except (SafetensorError, OSError, ValueError):
            reason = "is not a valid .safetensors file"
    else:
        with open(path, "rb") as file:
            legacy = file.read(len(LEGACY_TORCH_MAGIC)) == LEGACY_TORCH_MAGIC
        if legacy or zipfile.is_zipfile(path):
            return
        reason = "is not a PyTorch checkpoint (a plain pickle can run code when loaded)"
    raise Refusal(field, f"{path.name} {reason}", "model_unreadable", name=path.name)


class Registry:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._hash_lock = threading.Lock()
        self._hash_cache_path = config.data_dir / "cache" / "hashes.json"

    # --- base models -------------------------------------------------------------------------

    def demo_model_path(self) -> Path:
        return self.config.checkpoints_dir / DEMO_MODEL_NAME

    def checkpoint(self, name: str | None = None) -> ModelRef:
        """The model to load: `[models] base` when `name` is None (a name, file, folder or hub
        id, as the admin configured it), else a model a request names — only the base's own
        name or one of the models in models/Stable-diffusion, by name. A request never reaches
        another path or the network, and an unknown name's error says nothing about the disk."""
        configured = self.config.models.base.strip()
        if name is None or name.strip() == configured:
            return self._resolve(configured)
        wanted = name.strip().removesuffix(".safetensors")
        for ref in self.checkpoints():
            if wanted == ref.name:
                return ref
        with contextlib.suppress(ValueError):  # the base by its name, wherever it lies
            if wanted == (base := self._resolve(configured)).name:
                return base
        log.warning("request named model %r, which is not in models/Stable-diffusion", name)
        raise Refusal(
            "model",
            f"{name!r} is not a model in models/Stable-diffusion",
            "model_missing",
            name=name,
        )

    def _resolve(self, name: str) -> ModelRef:
        """`[models] base` to a loadable model."""
        name = name.strip()
        if not name or name == DEMO_MODEL_NAME:
            return ModelRef(DEMO_MODEL_NAME, str(self.demo_model_path()), "folder", is_demo=True)
        for candidate in (Path(name), self.config.checkpoints_dir / name):
            for path in (candidate, candidate.with_name(candidate.name + ".safetensors")):
                if path.is_dir() and (path / "model_index.json").exists():
                    return _folder_ref(path)
                if path.is_file():
                    refuse_pickle(path, "model")
                    if path.suffix.lower() != ".safetensors":
                        raise ValueError(f"model: {path.name} is not a .safetensors checkpoint")
                    return ModelRef(path.stem, str(path), "file")
        if Path(name).suffix.lower() in PICKLE_SUFFIXES:
            refuse_pickle(Path(name), "model")
        if name.count("/") == 1 and not name.startswith((".", "/")):
            return ModelRef(name.split("/")[1], name, "hub")
        log.warning("model %r not found, also looked in %s", name, self.config.checkpoints_dir)
        raise Refusal(
            "model",
            f"{name!r} not found (looked for a diffusers folder or .safetensors file, also in "
            "models/Stable-diffusion)",
            "model_missing",
            name=name,
        )

    def checkpoints(self) -> list[ModelRef]:
        """Models in models/Stable-diffusion, like WebUI's checkpoint list."""
        found = []
        folder = self.config.checkpoints_dir
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_dir() and (path / "model_index.json").exists():
                    found.append(_folder_ref(path))
                elif path.suffix.lower() == ".safetensors" and not _converted(path):
                    found.append(ModelRef(path.stem, str(path), "file"))
        return found

    def vae(self) -> Path | None:
        name = self.config.models.vae.strip()
        if not name:
            return None
        for path in (Path(name), self.config.vae_dir / name):
            if path.exists():
                refuse_pickle(path, "vae")
                return path
        raise ValueError(f"models.vae: {name!r} not found (also looked in {self.config.vae_dir})")

    # --- LoRAs and upscalers -----------------------------------------------------------------

    def loras(self) -> dict[str, Path]:
        """LoRA name (file stem) → file, searched recursively like WebUI's Lora folder."""
        folder = self.config.loras_dir
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.rglob("*.safetensors"))}

    def lora(self, name: str) -> Path:
        found = self.loras().get(name)
        if found is not None:
            return found
        # A pickle of that name in models/Lora is refused as one; a name reaching elsewhere
        # (`../x`) is only "not found", whatever exists there.
        if re.fullmatch(r"[^/\\]+", name) and not name.startswith("."):
            for suffix in PICKLE_SUFFIXES:
                pickled = self.config.loras_dir / f"{name}{suffix}"
                if pickled.exists():
                    refuse_pickle(pickled, f"lora {name!r}")
        known = ", ".join(self.loras()) or "none"
        log.warning("LoRA %r not found in %s", name, self.config.loras_dir)
        raise Refusal("lora", f"{name!r} not found (available: {known})", "lora_missing", name=name)

    def embeddings(self) -> dict[str, Path]:
        """Textual-inversion embeddings (name = file stem) in models/embeddings, recursively."""
        folder = self.config.embeddings_dir
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.rglob("*.safetensors"))}

    def upscalers(self) -> dict[str, Path]:
        folder = self.config.upscalers_dir
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in UPSCALER_SUFFIXES}

    # --- hashes --------------------------------------------------------------------------------

    def _cached_hash(self, path: Path, kind: str, compute) -> str:
        stat = path.stat()
        key = f"{kind}:{path.resolve()}"
        stamp = [stat.st_size, stat.st_mtime]
        with self._hash_lock:
            cache = self._read_hash_cache()
            entry = cache.get(key)
            if entry and entry["stamp"] == stamp:
                return entry["sha256"]
            digest = compute(path)
            cache[key] = {"stamp": stamp, "sha256": digest}
            atomic_write_text(self._hash_cache_path, json.dumps(cache))
            return digest

    def _read_hash_cache(self) -> dict:
        try:
            return json.loads(self._hash_cache_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def model_hash(self, ref: ModelRef) -> str | None:
        """WebUI's short model hash; for a diffusers folder, the hash of its UNet weights file."""
        if ref.kind == "file":
            return self._cached_hash(Path(ref.location), "sha256", sha256_file)[:10]
        if ref.kind == "folder":
            weights = sorted((Path(ref.location) / "unet").glob("*.safetensors"))
            if weights:
                return self._cached_hash(weights[0], "sha256", sha256_file)[:10]
        return None

    def lora_hash(self, path: Path) -> str:
        return self._cached_hash(path, "addnet", addnet_hash)[:12]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def addnet_hash(path: Path) -> str:
    """sha256 of a safetensors file's tensor data (the bytes after its JSON header)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        header_length = int.from_bytes(file.read(8), "little")
        file.seek(8 + header_length)
        while block := file.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
