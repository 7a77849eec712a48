"""LoRA training speed on the tiny model: image-steps/s with and without cached latents.

Trains the same short run twice in one process (same data, seed and settings; one torch
thread, as the machines are shared) — once encoding
every image with the VAE at each step, once with latents cached up front — and prints both rates,
their ratio and the peak memory (CUDA peak allocated on a GPU, else the process's peak RSS).

    .venv/bin/python bench/train_speed.py [--epochs 2] [--images 4] [--size 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.diffusion.tiny import write_demo_model
from engine.training.intake import import_dataset
from engine.training.trainer import run_training
from posterbot.config import Config, IPConfig, ModelsConfig
from tests.training.conftest import TRIGGER, write_dataset


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=4, help="images of each of the 3 kinds")
    parser.add_argument("--size", type=int, default=128, help="training resolution (x64)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="train-speed-"))
    model = write_demo_model(root / "tiny")
    config = Config(
        data_dir=root / "data",
        models=ModelsConfig(base=str(model)),
        ips=[IPConfig(name="dada", trigger=TRIGGER, lora="dada_lora")],
    )
    size = (args.size, args.size)
    import_dataset(write_dataset(root / "raw", args.images, size), "dada", config)
    params = {
        "ip": "dada",
        "dataset": "dada",
        "resolution": args.size,
        "min_bucket_reso": 64,
        "max_bucket_reso": max(args.size, 128),
        "network_dim": 8,
        "network_alpha": 4,
        "repeats": 2,
        "epochs": args.epochs,
        "batch_size": 2,
        "sample_every_n_epochs": 0,
        "mixed_precision": "fp16" if torch.cuda.is_available() else "no",
    }
    rates = {}
    for cached in (False, True):
        run = dataclasses.replace(config, data_dir=root / f"data-{cached}")
        run.datasets_dir.parent.mkdir(parents=True, exist_ok=True)
        (root / "data" / "datasets").rename(run.datasets_dir)
        stamps: list[float] = []  # steps only: model loading and caching are not counted
        run_training(
            run,
            {**params, "cache_latents": cached},
            lambda *_, s=stamps: s.append(time.perf_counter()),
        )
        seconds = stamps[-1] - stamps[0]
        image_steps = (len(stamps) - 1) * params["batch_size"]
        rates[cached] = image_steps / seconds
        print(
            f"cache_latents={cached!s:<5} {image_steps} image-steps in {seconds:.1f}s: "
            f"{rates[cached]:.2f} image-steps/s, peak memory {peak_memory_mb():.0f} MiB"
        )
        run.datasets_dir.rename(root / "data" / "datasets")
    print(f"ratio cached / not cached: {rates[True] / rates[False]:.2f}")


if __name__ == "__main__":
    main()
