"""`posterbot` subcommands owned by the engine: engine, generate, demo-model.

Flags are named after WebUI's API fields (`--cfg-scale` is `cfg_scale`). torch is imported inside
the commands, so the CLI starts on hosts without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path

from engine.diffusion import fetch
from engine.service import queue_cli
from engine.training import cli as training_cli
from posterbot.config import Config, GenerationSettings
from posterbot.logs import setup_logging

# Every generation setting is a flag named after its WebUI field (`cfg_scale` → `--cfg-scale`),
# except these, spelled as WebUI users know them.
FLAG_NAMES = {"sampler_name": "--sampler", "enable_hr": "--hires"}
FLAG_HELP = {
    "negative_prompt": "what the image should not show",
    "sampler_name": 'WebUI sampler name, e.g. "DPM++ 2M Karras"',
    "seed": "seed (-1 = random)",
    "subseed": "variation seed (-1 = random)",
    "subseed_strength": "variation strength 0..1",
    "width": "width in pixels (multiple of 8; 64 recommended)",
    "height": "height in pixels (multiple of 8; 64 recommended)",
    "batch_size": "images per batch",
    "n_iter": "batches",
    "clip_skip": "CLIP layers to skip (1 = none)",
    "enable_hr": "hires fix",
    "hr_upscaler": "Latent, Lanczos, or a model in models/ESRGAN",
    "hr_second_pass_steps": "hires steps (0 = as first pass)",
    "hr_resize_x": "hires target width (instead of --hr-scale)",
    "hr_resize_y": "hires target height (instead of --hr-scale)",
}
SETTING_TYPES = typing.get_type_hints(GenerationSettings)


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per generation setting; an unset flag leaves the [generation] default."""
    for name, kind in SETTING_TYPES.items():
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        text = FLAG_HELP.get(name, f"WebUI's {name}")
        if kind is bool:
            parser.add_argument(flag, dest=name, action="store_const", const=True, help=text)
        else:
            parser.add_argument(flag, dest=name, type=kind, help=text)


def register(commands: argparse._SubParsersAction) -> None:
    training_cli.register(commands)  # dataset, train, versions, promote, xyz ...
    fetch.register(commands)  # models fetch
    queue_cli.register(commands)  # worker, queue status, queue dead-letter
    service = commands.add_parser(
        "engine", help="run the engine service (HTTP + workers)", description=engine_command.__doc__
    )
    service.add_argument("--host", help="listen address (default: [engine] host)")
    service.add_argument("--port", type=int, help="listen port (default: [engine] port)")
    service.set_defaults(handler=engine_command)

    generate = commands.add_parser(
        "generate", help="txt2img from a prompt, like WebUI", description=generate_command.__doc__
    )
    generate.add_argument("prompt", help="WebUI prompt; <lora:name:weight> tags select LoRAs")
    add_setting_flags(generate)
    generate.add_argument(
        "--lora", action="append", default=[], metavar="NAME:W", help="add a LoRA (repeatable)"
    )
    generate.add_argument("--model", help="checkpoint name, file, folder or hub id")
    generate.add_argument("-o", "--output-dir", type=Path, help="default: <data_dir>/outputs")
    generate.set_defaults(handler=generate_command)

    poster = commands.add_parser(
        "poster",
        help="a finished poster from a picture: title, logo, the channel's exact size",
        description=poster_command.__doc__,
    )
    poster.add_argument("image", type=Path, help="a PNG, JPEG or WEBP picture")
    poster.add_argument("--title", default="", help="the title (Chinese line breaking)")
    poster.add_argument("--subtitle", default="")
    poster.add_argument("--cta", default="", help="a call to action or date line")
    poster.add_argument(
        "--size",
        action="append",
        required=True,
        help="a channel (小红书, 抖音, 公众号头图, A4 ...), WxH, WxH@DPI or W:H; repeatable",
    )
    poster.add_argument("--layout", default="auto", help="auto, top, bottom or side")
    poster.add_argument("--ip", default="", help="whose brand kit (default: the default IP)")
    poster.add_argument("-o", "--output-dir", type=Path, help="default: <data_dir>/outputs")
    poster.set_defaults(handler=poster_command)

    info = commands.add_parser(
        "info", help="what a PNG says: infotext and poster copy", description=info_command.__doc__
    )
    info.add_argument("file", type=Path)
    info.set_defaults(handler=info_command)

    demo = commands.add_parser(
        "demo-model", help="write the tiny offline model", description=demo_model_command.__doc__
    )
    demo.add_argument("folder", type=Path)
    demo.add_argument("--kind", choices=["sd15", "sdxl"], default="sd15")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(handler=demo_model_command)


def engine_command(args: argparse.Namespace, config: Config) -> int:
    """Serve the engine's HTTP API and run one worker process per [engine] device until stopped.

    The bearer token comes from POSTERBOT_ENGINE_TOKEN (required beyond loopback), WebUI basic
    auth for /sdapi/v1 from POSTERBOT_API_AUTH=user:pass.
    """
    from engine.service.lifecycle import serve

    setup_logging(config.data_dir, terminal=True, verbose=args.verbose)
    serve(config, args.host or config.engine.host, args.port or config.engine.port)
    return 0


def generate_command(args: argparse.Namespace, config: Config) -> int:
    """Generate images and print the paths of the PNG files written (infotext inside)."""
    from engine.diffusion.generate import Engine
    from engine.diffusion.outputs import save_png
    from engine.diffusion.params import from_request, parse_lora_flag

    request = {name: getattr(args, name) for name in SETTING_TYPES}
    request["prompt"] = args.prompt
    request["loras"] = [parse_lora_flag(text) for text in args.lora]
    params = from_request(request, config.generation, config.limits)  # fail before loading
    if args.model:  # the command line names any model, as [models] base can
        config = dataclasses.replace(
            config, models=dataclasses.replace(config.models, base=args.model)
        )
    engine = Engine(config)
    result = engine.txt2img(params)
    if result.is_demo:
        print(
            "WARNING: DEMO MODEL (random weights): these images are noise. "
            "Set [models] base in config.toml to a real checkpoint.",
            file=sys.stderr,
        )
    output_dir = args.output_dir or config.outputs_dir
    for index, seed in enumerate(result.seeds):
        print(save_png(output_dir, seed, result.png(index)))
    return 0


def poster_command(args: argparse.Namespace, config: Config) -> int:
    """Lay copy out on a picture at each size and print the PNG and SVG files written."""
    from engine.service.finishing import check_spec, finish
    from prompts.sizes import channel_target

    targets = [dataclasses.asdict(channel_target(size)) for size in args.size]
    request = {"title": args.title, "subtitle": args.subtitle, "cta": args.cta}
    spec = check_spec(request | {"targets": targets, "layout": args.layout, "ip": args.ip}, config)
    folder = args.output_dir or config.outputs_dir
    for poster in finish(config, args.image.read_bytes(), spec, args.image.stem, folder):
        print(folder / poster["png"])
        print(folder / poster["svg"])
    return 0


def info_command(args: argparse.Namespace, config: Config) -> int:
    """Print a PNG's WebUI infotext and, for a finished poster, its copy, layout and fonts."""
    from engine.diffusion.infotext import read_png
    from poster.output import read_poster_chunk

    data = args.file.read_bytes()
    print(read_png(data) or "(no generation parameters)")
    if (chunk := read_poster_chunk(data)) is not None:
        copy = chunk["copy"]
        print(f"Poster: {chunk['size'][0]}x{chunk['size'][1]}, layout {chunk['layout']}")
        for element in chunk["elements"]:
            if element["lines"]:
                text = " / ".join(element["lines"])
                print(
                    f"  {element['kind']}: {text} ({element['family']} {element['weight']}, "
                    f"{element['size']} px, {element['colour']}, contrast {element['contrast']})"
                )
        print(f"  copy: {copy}")
    return 0


def demo_model_command(args: argparse.Namespace, config: Config) -> int:
    """Write a tiny Stable Diffusion model with random weights (offline) in the diffusers layout."""
    from engine.diffusion.tiny import write_demo_model

    print(write_demo_model(args.folder, kind=args.kind, seed=args.seed))
    return 0
