"""Tiny Stable Diffusion pipelines built from configs: offline, seeded random weights.

The demo model and every test use these. They have the real architectures (UNet with cross
attention, KL VAE with an 8× latent, CLIP text encoders, a real CLIP BPE tokenizer), only small,
and are written in the diffusers folder layout so the ordinary loader reads them back. Nothing is
fetched from a hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.diffusion.registry import DEMO_MARKER

# Plain English prompt words get merged tokens, as a real CLIP vocabulary has; anything else falls
# back to the 256 byte-level characters, so every text still tokenizes.
COMMON_WORDS = [
    "a",
    "an",
    "the",
    "of",
    "in",
    "on",
    "at",
    "with",
    "and",
    "for",
    "to",
    "is",
    "by",
    "from",
    "snow",
    "rider",
    "delivery",
    "poster",
    "christmas",
    "masterpiece",
    "best",
    "quality",
    "cute",
    "3d",
    "render",
    "c4d",
    "cat",
    "dog",
    "red",
    "blue",
    "green",
    "night",
    "city",
    "street",
    "festival",
    "happy",
    "girl",
    "boy",
    "knight",
    "holding",
    "gift",
    "running",
    "waving",
    "smile",
    "full",
    "body",
]
TEXT_DIM = 32


def _byte_characters() -> list[str]:
    """The 256 printable stand-ins CLIP's BPE uses for raw bytes (GPT-2's byte-to-unicode map)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for _, code in sorted(zip(printable, codes, strict=True))]


def write_tokenizer_files(folder: Path) -> int:
    """Write a CLIP BPE `vocab.json` + `merges.txt`; return the vocabulary size."""
    characters = _byte_characters()
    vocab_tokens = characters + [c + "</w>" for c in characters]
    merges: list[str] = []
    for word in COMMON_WORDS:
        # Merge left to right: "cat" → "c a", "ca t</w>"; each merge yields a new vocab entry.
        pieces = [*word[:-1], word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            rule = f"{pieces[0]} {pieces[1]}"
            if rule not in merges:
                merges.append(rule)
            if merged not in vocab_tokens:
                vocab_tokens.append(merged)
            pieces = [merged, *pieces[2:]]
    vocab_tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(vocab_tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    return len(vocab)


def _tokenizer(folder: Path, pad_token: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer

    write_tokenizer_files(folder)
    return CLIPTokenizer(
        str(folder / "vocab.json"),
        str(folder / "merges.txt"),
        pad_token=pad_token,
        model_max_length=77,  # CLIP's context: 75 tokens + BOS + EOS
    )


def _text_config(tokenizer, with_projection: bool):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=3,  # ≥ 2 so "clip skip 2" has a layer to stop at
        max_position_embeddings=77,
        projection_dim=TEXT_DIM,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        hidden_act="quick_gelu",
    )


def _vae():
    from diffusers import AutoencoderKL

    # Four blocks = an 8× latent like the real VAE, so sizes and "multiple of 8" behave the same.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )


def _scheduler():
    from diffusers import PNDMScheduler

    # The scheduler config Stable Diffusion 1.x checkpoints ship with.
    return PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )


def _unet(**architecture):
    """The tiny UNet: three levels, cross attention only at the lowest resolution, which keeps a
    512x768 demo image at CPU speed; `architecture` adds the SD 1.x or SDXL specifics."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=16,
        **architecture,
    )


def build_sd15(folder: Path, seed: int = 0):
    """A tiny SD 1.x pipeline: UNet with cross attention, 8× VAE, one CLIP text encoder."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer(Path(folder) / "_tokenizer")
    unet = _unet(cross_attention_dim=TEXT_DIM, attention_head_dim=8)
    text_encoder = CLIPTextModel(_text_config(tokenizer, with_projection=False))
    return StableDiffusionPipeline(
        vae=_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_sdxl(folder: Path, seed: int = 0):
    """A tiny SDXL pipeline: two text encoders (the second with projection) and time ids."""
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    tokenizer = _tokenizer(Path(folder) / "_tokenizer")
    tokenizer_2 = _tokenizer(Path(folder) / "_tokenizer_2", pad_token="!")  # as SDXL's second
    time_embed_dim = 8
    unet = _unet(
        attention_head_dim=(2, 2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        transformer_layers_per_block=(1, 1, 2),
        projection_class_embeddings_input_dim=6 * time_embed_dim + TEXT_DIM,
        cross_attention_dim=2 * TEXT_DIM,
    )
    scheduler = _scheduler()
    return StableDiffusionXLPipeline(
        vae=_vae(),
        text_encoder=CLIPTextModel(_text_config(tokenizer, with_projection=False)),
        text_encoder_2=CLIPTextModelWithProjection(_text_config(tokenizer_2, with_projection=True)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def write_demo_model(folder: str | Path, kind: str = "sd15", seed: int = 0) -> Path:
    """Build a tiny pipeline (`sd15` or `sdxl`) and save it in the diffusers folder layout."""
    if kind not in ("sd15", "sdxl"):
        raise ValueError(f"kind: {kind!r} is not one of sd15, sdxl")
    folder = Path(folder)
    build = build_sd15 if kind == "sd15" else build_sdxl
    pipe = build(folder, seed=seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    # transformers 5 saves only tokenizer.json; slow-tokenizer readers (kohya's trainer, older
    # transformers) need the BPE files beside it, and both give the same token ids.
    for scratch in folder.glob("_tokenizer*"):
        for file in scratch.iterdir():
            file.replace(folder / scratch.name.lstrip("_") / file.name)
        scratch.rmdir()
    marker = {"kind": kind, "seed": seed, "note": "random weights: images are noise, not posters"}
    (folder / DEMO_MARKER).write_text(json.dumps(marker), encoding="utf-8")
    return folder
