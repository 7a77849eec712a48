"""What the engine benchmarks share: their command line and one warm `Engine` on the tiny offline
model (or --model), at the size and steps asked for."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def engine_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", type=int, default=64, help="width and height in pixels")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", help="a diffusers folder (default: the tiny demo model)")
    return parser


def warm_engine(args: argparse.Namespace, folder: Path) -> tuple[Any, Any]:
    """(config, Engine) with `folder` as the data folder."""
    from engine.diffusion.generate import Engine
    from engine.diffusion.tiny import write_demo_model
    from posterbot.config import Config, GenerationSettings, ModelsConfig

    model = args.model or str(write_demo_model(folder / "tiny"))
    config = Config(
        data_dir=folder,
        models=ModelsConfig(base=model),
        generation=GenerationSettings(
            width=args.size, height=args.size, steps=args.steps, sampler_name="Euler a"
        ),
    )
    return config, Engine(config)
