"""Write a diffusers SD 1.x folder as one original-layout (LDM) `.safetensors` checkpoint, the way
WebUI users keep their models, so the single-file loading path is tested offline.

This is the reverse of diffusers' `convert_ldm_*_checkpoint` for the layouts our tiny model uses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_FIXED = {"conv_norm_out": "norm_out"}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


def _rename(rest: str, table: dict[str, str]) -> str:
    head, _, tail = rest.rpartition(".")  # "norm1.weight" → "norm1", "weight"
    return f"{table.get(head, head)}.{tail}"


def _unet_key(key: str, config: dict) -> str:
    per_level = config["layers_per_block"] + 1
    with_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]
    if (head := key.rpartition(".")[0]) in _UNET_FIXED:
        return _UNET_FIXED[head] + "." + key.rpartition(".")[2]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = per_level * level + layer + 1
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_rename(rest, _UNET_RESNET)}"
        return f"input_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{per_level * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename(m[2], _UNET_RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        level, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = per_level * level + layer
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_rename(rest, _UNET_RESNET)}"
        return f"output_blocks.{index}.1.{rest}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        level = int(m[1])
        slot = 2 if with_attention[level] else 1
        return f"output_blocks.{per_level * level + per_level - 1}.{slot}.conv.{m[2]}"
    raise ValueError(f"unet key {key!r} has no original-layout name")


def _vae_key(key: str, levels: int) -> str:
    part, _, rest = key.partition(".")  # encoder / decoder / quant_conv / post_quant_conv
    if m := re.fullmatch(r"(down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", rest):
        level = int(m[2]) if m[1] == "down" else levels - 1 - int(m[2])
        name = m[4].replace("conv_shortcut", "nin_shortcut")
        return f"{part}.{m[1]}.{level}.block.{m[3]}.{name}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.(.+)", rest):
        return f"{part}.down.{m[1]}.downsample.{m[2]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.(.+)", rest):
        return f"{part}.up.{levels - 1 - int(m[1])}.upsample.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", rest):
        return f"{part}.mid.block_{int(m[1]) + 1}.{m[2]}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", rest):
        return f"{part}.mid.attn_1.{_rename(m[1], _VAE_ATTENTION)}"
    head, _, tail = rest.rpartition(".")
    return f"{part}.{_VAE_FIXED.get(head, head)}.{tail}" if head else key


def _vae_tensors(vae_folder: Path, prefix: str) -> dict:
    vae_config = json.loads((vae_folder / "config.json").read_text())
    levels = len(vae_config["up_block_types"])
    tensors = {}
    for key, tensor in load_file(vae_folder / "diffusion_pytorch_model.safetensors").items():
        if ".mid_block.attentions." in key and key.endswith("weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # the original VAE attention is 1x1 convolutions
        tensors[prefix + _vae_key(key, levels)] = tensor
    return tensors


def write_vae_file(vae_folder: Path, path: Path) -> Path:
    """A diffusers VAE folder as a WebUI VAE file (vae-ft-mse-840000-ema-pruned's layout)."""
    save_file({k: v.contiguous() for k, v in _vae_tensors(vae_folder, "").items()}, path)
    return path


def write_single_file(folder: Path, path: Path) -> Path:
    """Convert the diffusers folder of a tiny SD 1.x model into one LDM-layout checkpoint."""
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    checkpoint = {}
    for key, tensor in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items():
        checkpoint[UNET_PREFIX + _unet_key(key, unet_config)] = tensor
    checkpoint |= _vae_tensors(folder / "vae", VAE_PREFIX)
    for key, tensor in load_file(folder / "text_encoder" / "model.safetensors").items():
        name = key if key.startswith("text_model.") else "text_model." + key
        checkpoint[CLIP_PREFIX + name] = tensor
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, path)
    return path
