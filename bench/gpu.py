"""Real-size Stable Diffusion architectures with random weights (same FLOPs as real checkpoints)
on a GPU: our engine against a bare diffusers call, batching, LoRA fused vs unfused, hires fix.

Nothing is downloaded: the UNet, VAE and text encoders are built from SD 1.5's (or SDXL's)
published configs with random weights and the locally built tokenizer, saved in the diffusers
layout, and loaded by the same `Engine` code as a real checkpoint. Every figure is a ratio taken
within one run, next to its raw rate.

    .venv/bin/python bench/gpu.py                    # SD 1.5 size, 512x512, 25 steps, cuda
    .venv/bin/python bench/gpu.py --kind sdxl        # SDXL size, 1024x1024
    .venv/bin/python bench/gpu.py --device cpu --size 64 --steps 2 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

# The LoRA writer the tests use lives in tests/fakes; run from anywhere, import it from the repo.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.diffusion.generate import Engine
from engine.diffusion.params import from_request
from engine.diffusion.samplers import make_scheduler
from engine.diffusion.tiny import write_tokenizer_files
from posterbot.config import Config, ModelsConfig
from tests.fakes.models import write_lora_pair

PROMPT = "dadaknight, a delivery rider in the snow, christmas, poster, masterpiece, best quality"
NEGATIVE = "lowres, bad anatomy, watermark"
SAMPLER = "DPM++ 2M Karras"

# Published architectures (diffusers configs of SD 1.5 and SDXL base).
SD15_UNET = {
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SDXL_UNET = {
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 2048,
    "attention_head_dim": (5, 10, 20),
    "transformer_layers_per_block": (1, 2, 10),
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
}
CLIP_BIGG = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
}


def write_full_size_model(folder: Path, kind: str) -> Path:
    """Random-weight pipeline with the real architecture, saved in the diffusers layout."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    torch.manual_seed(0)
    write_tokenizer_files(folder / "_vocab")
    tokenizer = CLIPTokenizer(
        str(folder / "_vocab" / "vocab.json"),
        str(folder / "_vocab" / "merges.txt"),
        model_max_length=77,
    )

    def text_config(sizes: dict) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **sizes,
        )

    unet = UNet2DConditionModel(
        sample_size=128 if kind == "sdxl" else 64,
        layers_per_block=2,
        **(SDXL_UNET if kind == "sdxl" else SD15_UNET),
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )
    if kind == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(text_config(CLIP_L)),
            text_encoder_2=CLIPTextModelWithProjection(text_config(CLIP_BIGG)),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
        )
    else:
        pipe = StableDiffusionPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(text_config(CLIP_L)),
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def median_seconds(call: Callable[[], object], rounds: int, sync: Callable[[], None]) -> float:
    times = []
    for _ in range(rounds):
        sync()
        started = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["sd15", "sdxl"], default="sd15")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, help="default 512 (sd15) or 1024 (sdxl)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = args.size or (1024 if args.kind == "sdxl" else 512)
    logging.disable(logging.WARNING)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_full_size_model(Path(tmp) / f"random-{args.kind}", args.kind)
        config = Config(
            data_dir=Path(tmp) / "data", models=ModelsConfig(base=str(folder), device=args.device)
        )
        engine = Engine(config)
        pipe = engine.pipe
        print(
            f"{args.kind} architecture, random weights, {size}x{size}, "
            f"{args.steps} steps, {SAMPLER}"
        )
        print(
            f"device: {torch.cuda.get_device_name() if cuda else 'cpu'}, "
            f"dtype {engine.dtype}, torch {torch.__version__}"
        )

        def request(**extra):
            fields = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "sampler_name": SAMPLER}
            fields |= {"steps": args.steps, "width": size, "height": size, "seed": 1, **extra}
            return from_request(fields, config.generation, config.limits)

        scheduler = make_scheduler(SAMPLER, dict(pipe.scheduler.config))

        def bare():
            pipe.scheduler = scheduler
            pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=args.steps, width=size,
                 height=size, generator=torch.Generator("cpu").manual_seed(1))  # fmt: skip

        single = request()
        batch = request(batch_size=4)
        for warm in (bare, lambda: engine.txt2img(single)):
            warm()
        bare_s = median_seconds(bare, args.rounds, sync)
        ours_s = median_seconds(lambda: engine.txt2img(single), args.rounds, sync)
        batch_s = median_seconds(lambda: engine.txt2img(batch), args.rounds, sync)
        print(
            f"bare pipeline {bare_s:.3f} s ({args.steps / bare_s:.1f} it/s); "
            f"ours {ours_s:.3f} s; ratio ours/bare {ours_s / bare_s:.3f}"
        )
        print(
            f"batch 4: {4 / batch_s:.2f} img/s vs 1: {1 / ours_s:.2f} img/s; "
            f"throughput ratio {ours_s * 4 / batch_s:.2f}"
        )

        if args.kind == "sd15":
            scratch = Engine(config).pipe
            write_lora_pair(scratch, config.loras_dir, "bench", seed=1)
            del scratch
            lora = request(prompt=PROMPT + " <lora:bench_kohya:0.8>")
            engine.txt2img(lora)
            unfused_s = median_seconds(lambda: engine.txt2img(lora), args.rounds, sync)
            fused_engine = Engine(Config(data_dir=config.data_dir, models=ModelsConfig(
                base=str(folder), device=args.device, fuse_lora=True)))  # fmt: skip
            fused_engine.txt2img(lora)
            fused_s = median_seconds(lambda: fused_engine.txt2img(lora), args.rounds, sync)
            print(
                f"LoRA unfused {unfused_s:.3f} s, fused {fused_s:.3f} s; "
                f"fused speed-up {unfused_s / fused_s:.3f}"
            )

        hires = request(enable_hr=True, hr_scale=2, hr_second_pass_steps=max(1, args.steps // 2))
        engine.txt2img(hires)
        hires_s = median_seconds(lambda: engine.txt2img(hires), args.rounds, sync)
        print(
            f"hires fix to {2 * size}x{2 * size}: {hires_s:.3f} s "
            f"({hires_s / ours_s:.2f}x the plain image)"
        )
        if cuda:
            print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
