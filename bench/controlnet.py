"""ControlNet cost: txt2img vs the same txt2img with one ControlNet unit (time ratio).

    .venv/bin/python bench/controlnet.py [--size 64] [--steps 8] [--rounds 5] [--model DIR]

Same warm `Engine` (the tiny offline model unless --model is given, with a ControlNet made from
its UNet by `ControlNetModel.from_unet`), same prompt, seed, size, sampler and steps; the unit
is canny on a drawn sketch. The two ways alternate round by round after a warm-up, so load on a
shared machine hits both alike. A ControlNet is a copy of the UNet's encoder, so one unit should
cost well under a second UNet: published figures for SD 1.5 on a GPU are ~1.3-1.5x a plain step.
A pipeline that rebuilt or reloaded its ControlNet per request would show as a much larger ratio
and as model loads after the warm-up, which this prints too.
"""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # run from anywhere in the checkout

import base64  # noqa: E402
import functools  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from io import BytesIO  # noqa: E402

from bench.tiny_engine import engine_arguments, warm_engine  # noqa: E402


def sketch_base64(size: int) -> str:
    """A black-on-white layout sketch (a box and a circle) as base64 PNG."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(picture)
    draw.rectangle((size // 8, size // 8, size // 2, size - size // 6), outline="black", width=3)
    draw.ellipse((size // 2 + 4, size // 6, size - size // 8, size // 2), outline="black", width=2)
    buffer = BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def main() -> None:
    args = engine_arguments(__doc__.splitlines()[0]).parse_args()

    import torch
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from engine.diffusion.controlnet_units import parse_units
    from engine.diffusion.params import from_request
    from engine.service.inputs import store_picture

    with tempfile.TemporaryDirectory() as tmp:
        # 1. one warm engine, a ControlNet of its UNet, and the two requests
        config, engine = warm_engine(args, Path(tmp))
        controlnet = ControlNetModel.from_unet(engine.pipe.unet)
        weights = {k: v.detach().cpu().contiguous() for k, v in controlnet.state_dict().items()}
        config.controlnet_dir.mkdir(parents=True)
        save_file(weights, str(config.controlnet_dir / "bench_canny.safetensors"))
        unit = {"enabled": True, "module": "canny", "model": "bench_canny"}
        units = parse_units(
            config,
            [unit | {"image": sketch_base64(args.size)}],
            engine.model,
            functools.partial(store_picture, config),
        )
        request = {"prompt": "a mascot poster", "seed": 1}
        plain = from_request(request, config.generation, config.limits)
        controlled = from_request(
            request | {"controlnet": [u.to_dict() for u in units]},
            config.generation,
            config.limits,
        )

        def txt2img() -> None:
            engine.txt2img(plain)

        def with_controlnet() -> None:
            engine.txt2img(controlled)

        # 2. warm up (the ControlNet loads here), then alternate the two ways
        txt2img(), with_controlnet()
        loads_after_warm_up = engine.controlnets.loads
        elapsed = {txt2img: 0.0, with_controlnet: 0.0}
        for _ in range(args.rounds):
            for way in elapsed:
                began = time.perf_counter()
                way()
                elapsed[way] += time.perf_counter() - began
        reloads = engine.controlnets.loads - loads_after_warm_up

    # 3. report
    seconds = {way.__name__: total / args.rounds for way, total in elapsed.items()}
    print(
        f"device {engine.device}, torch threads {torch.get_num_threads()}, {args.size}x{args.size},"
        f" {args.steps} steps, {args.rounds} rounds"
    )
    print(f"txt2img:                  {seconds['txt2img'] * 1000:.0f} ms per image")
    print(f"txt2img + one ControlNet: {seconds['with_controlnet'] * 1000:.0f} ms per image")
    print(f"ratio ControlNet / plain: {seconds['with_controlnet'] / seconds['txt2img']:.2f}")
    print(f"ControlNet loads after the warm-up: {reloads}")


if __name__ == "__main__":
    main()
