"""Single-file checkpoints (the original LDM layout WebUI keeps) loaded offline, with no settings.

diffusers builds a pipeline from a single file with the diffusers config folder of the public
model it descends from, and fetches that folder from the hub unless one is given. We ship those
folders (`single_file_configs/`: model_index, scheduler, UNet, VAE, text encoder and tokenizer
configs of stable-diffusion-v1-5, its inpainting model, stable-diffusion-2-1 and its 512 px base,
stable-diffusion-2-inpainting and stable-diffusion-xl-base-1.0; see its README) and choose one by
the checkpoint's keys with diffusers' own `infer_diffusers_model_type`, so loading never touches
the network. The CLIP tokenizer's vocabulary is built from OpenAI CLIP's BPE file (MIT, shipped
with its licence) into `<data_dir>/cache/single-file-configs/<type>/` the first time.

Every problem with a file is one line naming it (`model: foo.safetensors: ...`), a ValueError
like the rest of the registry's, never a diffusers traceback or a hub error.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

SHIPPED = Path(__file__).with_name("single_file_configs")
BPE_FILE = SHIPPED / "clip" / "bpe_simple_vocab_16e6.txt.gz"
STAMP = ".posterbot-stamp"  # digest of the shipped files a materialised folder was made from
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on the JSON header

# diffusers' model type (infer_diffusers_model_type) → the pipeline class that loads it.
PIPELINES = {
    "v1": "StableDiffusionPipeline",
    "v2": "StableDiffusionPipeline",
    "v2_base": "StableDiffusionPipeline",  # ours: SD 2.x at 512 px, epsilon (see model_type)
    "xl_base": "StableDiffusionXLPipeline",
    "inpainting": "StableDiffusionInpaintPipeline",
    "inpainting_v2": "StableDiffusionInpaintPipeline",
}
TXT2IMG_TYPES = {"v1", "v2", "v2_base", "xl_base"}
DESCRIPTIONS = {
    "v1": "Stable Diffusion 1.x",
    "v2": "Stable Diffusion 2.x (768 px, v-prediction)",
    "v2_base": "Stable Diffusion 2.x (512 px)",
    "xl_base": "SDXL",
    "inpainting": "Stable Diffusion 1.x inpainting",
    "inpainting_v2": "Stable Diffusion 2.x inpainting",
}
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIXES = ("first_stage_model.", "vae.")  # diffusers' LDM_VAE_KEYS
# The key diffusers looks for before it converts each text encoder (CHECKPOINT_KEY_NAMES names).
TEXT_ENCODER_MARKS = {
    "v1": {"text_encoder": "clip"},
    "inpainting": {"text_encoder": "clip"},
    "v2": {"text_encoder": "open_clip"},
    "v2_base": {"text_encoder": "open_clip"},
    "inpainting_v2": {"text_encoder": "open_clip"},
    "xl_base": {"text_encoder": "clip_sdxl", "text_encoder_2": "open_clip_sdxl"},
}


@dataclass(frozen=True)
class TensorInfo:
    """What diffusers' key inspection reads from a tensor (its shape), from the file's header."""

    shape: tuple[int, ...]
    dtype: str = ""  # safetensors' name: F16, F32, BF16 ...


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors of a .safetensors file by name, read from its JSON header without loading."""
    try:
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"a {length}-byte header")
            header = json.loads(file.read(length))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"model: {path.name}: not a readable .safetensors file ({exc})") from None
    return {
        name: TensorInfo(tuple(entry["shape"]), entry.get("dtype", ""))
        for name, entry in header.items()
        if name != "__metadata__"
    }


def model_type(path: Path, tensors: dict[str, TensorInfo]) -> str:
    """Which model a checkpoint is, as diffusers names it (plus our `v2_base`)."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type

    try:
        kind = infer_diffusers_model_type(tensors)
    except (KeyError, IndexError, AttributeError, TypeError):
        kind = "unknown"
    if kind == "v1" and not any(name.startswith(UNET_PREFIX) for name in tensors):
        raise ValueError(f"model: {path.name}: not a Stable Diffusion checkpoint (no UNet keys)")
    if kind == "xl_refiner":
        raise ValueError(
            f"model: {path.name}: an SDXL refiner, which only refines other images; "
            "use an SDXL base checkpoint"
        )
    if kind not in PIPELINES:
        raise ValueError(
            f"model: {path.name}: a {kind!r} checkpoint; single files of Stable Diffusion 1.x, "
            "2.x and SDXL base models are loaded"
        )
    if kind == "v2" and _declares_epsilon(path):
        return "v2_base"
    return kind


def _declares_epsilon(path: Path) -> bool:
    """SD 2.x 512 px (epsilon) and 768 px (v) checkpoints have the same keys. Without more,
    diffusers takes stable-diffusion-2-1 (768, v); WebUI reads the LDM yaml kept beside the file
    (`model.yaml`), whose `parameterization: "v"` marks the v model. We read that yaml too."""
    yaml = path.with_suffix(".yaml")
    if not yaml.is_file():
        return False
    text = yaml.read_text(encoding="utf-8", errors="replace")
    return not re.search(r"^\s*parameterization:\s*[\"']?v[\"']?\s*(#.*)?$", text, re.MULTILINE)


def check_components(
    path: Path, kind: str, tensors: dict[str, TensorInfo], given: set[str] = frozenset()
) -> None:
    """Refuse a checkpoint that lacks a part (and none was given in its place), naming it."""
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES

    if "vae" not in given and not any(name.startswith(VAE_PREFIXES) for name in tensors):
        raise ValueError(
            f"model: {path.name}: has no VAE (no first_stage_model.* keys); "
            "set [models] vae to a VAE file in models/VAE"
        )
    for component, mark in TEXT_ENCODER_MARKS[kind].items():
        if component not in given and CHECKPOINT_KEY_NAMES[mark] not in tensors:
            raise ValueError(
                f"model: {path.name}: has no text encoder: {component} "
                f"({CHECKPOINT_KEY_NAMES[mark]} is missing)"
            )


@functools.cache
def clip_vocabulary() -> tuple[str, str]:
    """CLIP's `vocab.json` and `merges.txt` texts, built from its BPE file as CLIP's
    SimpleTokenizer builds them: the 256 byte characters, the same with `</w>`, one token per
    merge (48894), then `<|startoftext|>` (49406) and `<|endoftext|>` (49407)."""
    lines = gzip.decompress(BPE_FILE.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # line 0 is a version line; CLIP uses this many
    characters = list(_byte_characters())
    tokens = characters + [c + "</w>" for c in characters]
    tokens += ["".join(merge.split()) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = json.dumps({token: i for i, token in enumerate(tokens)}, ensure_ascii=False)
    return vocab, "#version: 0.2\n" + "\n".join(merges) + "\n"


def _byte_characters() -> list[str]:
    """GPT-2's byte-to-unicode map, in CLIP's order: printable bytes first, the rest after."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [byte for byte in range(256) if byte not in printable]
    return [chr(byte) for byte in printable] + [chr(256 + i) for i in range(len(others))]


def _shipped_digest(kind: str) -> str:
    digest = hashlib.sha256()
    for file in [*sorted((SHIPPED / kind).rglob("*.json")), BPE_FILE]:
        digest.update(file.relative_to(SHIPPED).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def config_folder(kind: str, cache_dir: Path) -> Path:
    """The diffusers config folder of model type `kind` (with its tokenizer vocabulary) under
    `cache_dir/single-file-configs/`, written once; safe when several workers start together."""
    target = cache_dir / "single-file-configs" / kind
    stamp = _shipped_digest(kind)
    if _stamp_of(target) == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        shutil.copytree(SHIPPED / kind, staging, dirs_exist_ok=True)
        vocab, merges = clip_vocabulary()
        for tokenizer in sorted(staging.glob("tokenizer*")):
            (tokenizer / "vocab.json").write_text(vocab, encoding="utf-8")
            (tokenizer / "merges.txt").write_text(merges, encoding="utf-8")
        (staging / STAMP).write_text(stamp, encoding="utf-8")
        if target.exists():  # made from older shipped files
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:  # another worker renamed its copy first
            if _stamp_of(target) != stamp:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _stamp_of(folder: Path) -> str | None:
    try:
        return (folder / STAMP).read_text(encoding="utf-8")
    except OSError:
        return None


def load(path: Path, cache_dir: Path, dtype, config: str = "", txt2img: bool = True, **given):
    """The pipeline in the single-file checkpoint `path`, built offline.

    `config` (`[models] single_file_config`) overrides the shipped config folder; `given`
    components (e.g. `vae=`) are used instead of the checkpoint's own.
    """
    import diffusers
    import torch
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    # 1. which model the keys say it is, and whether every part is there
    tensors = read_header(path)
    kind = model_type(path, tensors)
    if txt2img and kind not in TXT2IMG_TYPES:
        raise ValueError(
            f"model: {path.name}: a {DESCRIPTIONS[kind]} checkpoint, which does not make "
            "pictures from text alone; use a base checkpoint"
        )
    check_components(path, kind, tensors, set(given))
    # 2. its config folder: the setting, else the shipped one
    folder = Path(config) if config else config_folder(kind, cache_dir)
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"models.single_file_config: {folder} has no model_index.json")
    # 3. the pipeline, with nothing from the network
    pipeline_class = getattr(diffusers, PIPELINES[kind])
    try:
        return pipeline_class.from_single_file(
            str(path), config=str(folder), dtype=dtype, local_files_only=True, **given
        )
    except SingleFileComponentError as exc:
        reason = str(exc.message or exc).splitlines()[0]
        raise ValueError(f"model: {path.name}: {reason}") from None
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        if isinstance(exc, MemoryError | torch.OutOfMemoryError):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        setting = "its" if config else f"the {DESCRIPTIONS[kind]}"
        raise ValueError(
            f"model: {path.name}: does not fit {setting} config ({reason[:300]}); set "
            "[models] single_file_config to the diffusers folder of the model it comes from"
        ) from None


def load_vae(path: Path, cache_dir: Path, dtype, sdxl: bool):
    """A single-file VAE (e.g. vae-ft-mse-840000), built offline with the VAE config of the base
    model it is used with (SD 1.x/2.x VAEs share one; SDXL's has its own scaling factor)."""
    from diffusers import AutoencoderKL

    folder = config_folder("xl_base" if sdxl else "v1", cache_dir)
    if not any(
        name.startswith(("encoder.", "decoder.", *VAE_PREFIXES)) for name in read_header(path)
    ):
        raise ValueError(f"models.vae: {path.name}: not a VAE (no encoder/decoder keys)")
    return AutoencoderKL.from_single_file(
        str(path), config=str(folder), subfolder="vae", dtype=dtype, local_files_only=True
    )
