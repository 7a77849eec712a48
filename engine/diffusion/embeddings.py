"""Textual-inversion embeddings from models/embeddings, used by name in prompts as WebUI does:
a prompt that has the file's name as a word gets the embedding's vectors there.

Files are `.safetensors` in WebUI's layouts: `emb_params` (SD 1.x/2.x, one or more vectors) or
`clip_l` + `clip_g` (SDXL, one tensor per text encoder). Describing them (`describe`) reads only
the safetensors header, so the service lists them without torch; the worker loads one with
diffusers' textual-inversion loader the first time a prompt names it, and keeps it.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path
from typing import Any

from posterbot.errors import Refusal

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 1 << 20  # an embedding's header is a few hundred bytes


def header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names → dtype, shape, offsets)."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8) or b"\0" * 8)
        if not 0 < length <= MAX_HEADER_BYTES:
            raise ValueError(f"{path.name}: not a safetensors file")
        return json.loads(file.read(length))


def describe(path: Path) -> dict[str, Any] | None:
    """WebUI's description of an embedding file ({"step", "sd_checkpoint", "sd_checkpoint_name",
    "shape", "vectors"}), or None when it is not one (then it is listed as skipped)."""
    try:
        tensors = {k: v for k, v in header(path).items() if k != "__metadata__"}
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    shape = (tensors.get("emb_params") or tensors.get("clip_l") or {}).get("shape")
    if shape is None and len(tensors) == 1:
        shape = next(iter(tensors.values())).get("shape")
    if not shape:
        return None
    vectors = shape[0] if len(shape) == 2 else 1
    return {
        "step": None,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
        "shape": shape[-1],
        "vectors": vectors,
    }


def named_in(prompt: str, names: list[str]) -> list[str]:
    """The embedding names that appear as words in `prompt`."""
    return [name for name in names if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", prompt)]


class EmbeddingSet:
    """The embeddings a pipeline has loaded; `prepare` loads what prompts name and spells each
    multi-vector name as the tokens diffusers added for it (`name name_1 …`)."""

    def __init__(self, pipe, registry) -> None:
        self.pipe = pipe
        self.registry = registry
        self.loaded: dict[str, Path] = {}

    def prepare(self, prompts: list[str]) -> list[str]:
        available = self.registry.embeddings()
        for name in named_in(" ".join(prompts), list(available)):
            if name not in self.loaded:
                self._load(name, available[name])
        if not self.loaded:
            return prompts
        return [self.pipe.maybe_convert_prompt(prompt, self.pipe.tokenizer) for prompt in prompts]

    def _load(self, name: str, path: Path) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        pipe = self.pipe
        try:
            if "clip_l" in tensors and getattr(pipe, "text_encoder_2", None) is not None:
                pipe.load_textual_inversion(
                    tensors["clip_l"], token=name, text_encoder=pipe.text_encoder,
                    tokenizer=pipe.tokenizer,
                )  # fmt: skip
                pipe.load_textual_inversion(
                    tensors["clip_g"], token=name, text_encoder=pipe.text_encoder_2,
                    tokenizer=pipe.tokenizer_2,
                )  # fmt: skip
            else:
                vectors = tensors.get("emb_params")
                if vectors is None and len(tensors) == 1:
                    vectors = next(iter(tensors.values()))
                if vectors is None:
                    raise ValueError("no emb_params tensor")
                pipe.load_textual_inversion(vectors.reshape(-1, vectors.shape[-1]), token=name)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise Refusal(
                "prompt", f"embedding {name!r} does not fit this model ({exc})", "embedding"
            ) from None
        log.info("loaded embedding %s (%s)", name, path.name)
        self.loaded[name] = path
