"""Our txt2img path vs a bare diffusers pipeline call, same tiny model and settings, one run.

Prints the median time of each and their ratio (goal: ≤ 1.05). Both sides run the same sampler,
steps, size and CFG; ours adds request checks, WebUI prompt encoding, per-image CPU noise,
the scheduler swap, LoRA bookkeeping and infotext. Runs alternate so machine noise hits both.

    .venv/bin/python bench/engine_overhead.py [--size 256] [--steps 20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from engine.diffusion.generate import Engine
from engine.diffusion.params import from_request
from engine.diffusion.samplers import make_scheduler
from engine.diffusion.tiny import write_demo_model
from posterbot.config import Config, ModelsConfig

PROMPT = "dadaknight, a delivery rider in the snow, christmas, poster, masterpiece, best quality"
NEGATIVE = "lowres, bad anatomy, watermark"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        model = write_demo_model(Path(tmp) / "tiny")
        config = Config(data_dir=Path(tmp) / "data", models=ModelsConfig(base=str(model)))
        engine = Engine(config)
        pipe = engine.pipe  # the bare call uses the very same modules
        request = {
            "prompt": PROMPT,
            "negative_prompt": NEGATIVE,
            "sampler_name": "DPM++ 2M Karras",
            "steps": args.steps,
            "cfg_scale": 7,
            "width": args.size,
            "height": args.size,
            "seed": 1234,
        }
        params = from_request(request, config.generation, config.limits)
        bare_scheduler = make_scheduler("DPM++ 2M Karras", dict(pipe.scheduler.config))

        def ours() -> None:
            engine.txt2img(params)

        def bare() -> None:
            pipe.scheduler = bare_scheduler
            pipe(
                PROMPT,
                negative_prompt=NEGATIVE,
                num_inference_steps=args.steps,
                guidance_scale=7,
                width=args.size,
                height=args.size,
                generator=torch.Generator("cpu").manual_seed(1234),
            )

        ours(), bare()  # warm up both paths
        times: dict[str, list[float]] = {"ours": [], "bare": []}
        for _ in range(args.rounds):
            for name, call in (("bare", bare), ("ours", ours)):
                started = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - started)

    ours_s, bare_s = statistics.median(times["ours"]), statistics.median(times["bare"])
    print(f"tiny SD1.x, {args.size}x{args.size}, {args.steps} steps, DPM++ 2M Karras, CPU")
    print(f"bare diffusers pipeline: {bare_s * 1000:.1f} ms (median of {args.rounds})")
    print(f"posterbot Engine.txt2img: {ours_s * 1000:.1f} ms (median of {args.rounds})")
    print(f"ratio ours/bare: {ours_s / bare_s:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
