"""LoRA state-dict layouts, as pure key conversions (no model needed).

- peft (what training produces, module paths + `lora_A`/`lora_B`):
  `down_blocks.2.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight`
- kohya / WebUI (what WebUI, ComfyUI and kohya's trainer read and write):
  `lora_unet_down_blocks_2_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight`,
  `.lora_up.weight`, and a scalar `.alpha` (scale = alpha / rank);
  text encoder `lora_te_text_model_encoder_layers_0_self_attn_q_proj...`.
- diffusers (`pytorch_lora_weights.safetensors`): `unet.<path>.lora_A.weight` etc., written by
  `save_lora_weights`.

diffusers' `load_lora_weights` reads all three, so loading needs no code here; training writes
the kohya layout with this module.
"""

from __future__ import annotations

import torch

_PEFT_TO_KOHYA = {".lora_A.weight": ".lora_down.weight", ".lora_B.weight": ".lora_up.weight"}


def _kohya_module(prefix: str, module_path: str) -> str:
    return f"{prefix}_{module_path.replace('.', '_')}"


def peft_to_kohya(
    state_dict: dict[str, torch.Tensor], prefix: str, alpha: float
) -> dict[str, torch.Tensor]:
    """Convert one model's peft LoRA weights to kohya keys with `prefix` (`lora_unet`, `lora_te`).

    `alpha` is peft's `lora_alpha`; kohya stores it per module so that scale = alpha / rank is
    the same in both layouts. Text-encoder paths get `text_model.` as kohya names them (newer
    transformers drop that level from the module tree).
    """
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        suffix = next((s for s in _PEFT_TO_KOHYA if key.endswith(s)), None)
        if suffix is None:
            raise ValueError(f"state_dict: {key!r} is not a peft LoRA weight (lora_A/lora_B)")
        module_path = key[: -len(suffix)]
        if prefix.startswith("lora_te") and not module_path.startswith("text_model."):
            module_path = "text_model." + module_path
        module = _kohya_module(prefix, module_path)
        converted[module + _PEFT_TO_KOHYA[suffix]] = tensor.contiguous()
        converted[module + ".alpha"] = torch.tensor(float(alpha))
    return converted


def kohya_rank_and_alpha(state_dict: dict[str, torch.Tensor]) -> tuple[int, float]:
    """The network dim (rank) and alpha of a kohya-layout file (from its first module)."""
    for key, tensor in state_dict.items():
        if key.endswith(".lora_down.weight"):
            module = key[: -len(".lora_down.weight")]
            alpha = state_dict.get(module + ".alpha")
            rank = tensor.shape[0]
            return rank, float(alpha) if alpha is not None else float(rank)
    raise ValueError("state_dict: no lora_down weights, not a kohya LoRA")
