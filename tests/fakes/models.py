"""Model files for tests: random LoRAs in both layouts and a tiny ESRGAN upscaler."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.diffusion.lora_format import peft_to_kohya

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def random_lora_state(pipe, rank: int = 4, alpha: float = 2.0, seed: int = 3):
    """peft LoRA weights with random non-zero up matrices ("trained-looking"), and their configs.

    Adds adapters to `pipe`: pass a throwaway pipeline.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    configs = {}
    states = {}
    for part, targets in (("unet", UNET_TARGETS), ("text_encoder", TEXT_TARGETS)):
        config = LoraConfig(
            r=rank, lora_alpha=alpha, init_lora_weights=False, target_modules=targets
        )
        model = getattr(pipe, part)
        model.add_adapter(config)
        states[part] = get_peft_model_state_dict(model)
        configs[part] = config
    return states, configs


def write_lora_pair(pipe, folder: Path, name: str, seed: int = 3) -> tuple[Path, Path]:
    """The same random LoRA as `<name>_kohya.safetensors` and `<name>_diffusers.safetensors`."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    states, configs = random_lora_state(pipe, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    kohya = folder / f"{name}_kohya.safetensors"
    alpha = configs["unet"].lora_alpha
    save_file(
        peft_to_kohya(states["unet"], "lora_unet", alpha)
        | peft_to_kohya(states["text_encoder"], "lora_te", alpha),
        kohya,
    )
    diffusers_file = folder / f"{name}_diffusers.safetensors"
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=convert_state_dict_to_diffusers(states["unet"]),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(states["text_encoder"]),
        weight_name=diffusers_file.name,
        unet_lora_adapter_metadata=configs["unet"].to_dict(),
        text_encoder_lora_adapter_metadata=configs["text_encoder"].to_dict(),
    )
    return kohya, diffusers_file


def write_tiny_esrgan(path: Path) -> Path:
    """A 4× ESRGAN with random weights, in the layout spandrel detects."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path
