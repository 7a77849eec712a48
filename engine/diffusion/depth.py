"""The depth_anything preprocessor: a picture → its relative depth as a grey map, near = white.

The network is Depth Anything (Yang et al., Apache-2.0), as transformers builds it
(`DepthAnythingForDepthEstimation`) from a local folder in the hub's layout of
`LiheYoung/depth-anything-small-hf`: `config.json` + `model.safetensors` under
`models/ControlNet/annotators/depth-anything-small/`; loaded offline, safetensors only.

Steps as the sd-webui-controlnet extension's `depth_anything`: the picture scaled so both sides
are at least 518 pixels and multiples of 14 (the ViT's patch), normalised by ImageNet's mean and
spread, the predicted inverse depth resized back bilinearly and stretched to 0…255. Only workers
import this (torch).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import cv2
import numpy as np
import torch

from engine.diffusion.annotators import device

NET_SIZE = 518  # the size Depth Anything was trained at (the extension's transform)
PATCH = 14
MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # ImageNet's, as the model was trained
STD = np.array([0.229, 0.224, 0.225], np.float32)


def _net_side(side: float) -> int:
    """A multiple of 14 near `side`, never under NET_SIZE (the extension's lower bound)."""
    rounded = round(side / PATCH) * PATCH
    return rounded if rounded >= NET_SIZE else math.ceil(side / PATCH) * PATCH


def load_depth_model(folder: Path):
    """The Depth Anything network of `folder`, kept while its weights are unchanged."""
    return _loaded(folder, (folder / "model.safetensors").stat().st_mtime)


@functools.lru_cache(maxsize=1)
def _loaded(folder: Path, stamp: float):
    from transformers import DepthAnythingForDepthEstimation

    def refuse(detail: str) -> ValueError:
        return ValueError(f"module: {folder.name} is not a Depth Anything model ({detail})")

    try:
        kind = json.loads((folder / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise refuse(f"config.json: {exc}") from None
    if kind != "depth_anything":
        raise refuse(f"config.json says model_type {kind!r}")
    try:
        model, info = DepthAnythingForDepthEstimation.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, output_loading_info=True
        )
    except (OSError, RuntimeError, ValueError) as exc:
        raise refuse(str(exc).splitlines()[0]) from None
    # transformers fills weights missing from the file with random ones: refuse instead
    missing = sorted(map(str, [*info.get("missing_keys", ()), *info.get("mismatched_keys", ())]))
    if missing:
        raise refuse(f"{len(missing)} weights missing or of another shape, e.g. {missing[0]}")
    return model.eval().to(device())


@torch.no_grad()
def depth_map(image: np.ndarray, folder: Path) -> np.ndarray:
    """The normalised inverse depth of an RGB uint8 picture, HxW uint8 (near = white)."""
    model = load_depth_model(folder)
    height, width = image.shape[:2]
    k = max(NET_SIZE / height, NET_SIZE / width)
    size = (_net_side(width * k), _net_side(height * k))
    x = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    x = torch.from_numpy(((x - MEAN) / STD).transpose(2, 0, 1)[None].copy()).to(device())
    depth = model(pixel_values=x).predicted_depth[None]  # 1x1xhxw
    depth = torch.nn.functional.interpolate(depth, (height, width), mode="bilinear")[0, 0]
    depth = (depth - depth.min()) / (depth.max() - depth.min()).clamp(min=1e-8) * 255
    return depth.float().cpu().numpy().astype(np.uint8)
