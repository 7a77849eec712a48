"""`posterbot prompt "<request>"`: show the structured prompt a chat request becomes."""

from __future__ import annotations

import argparse
import asyncio
import json

from posterbot.config import Config
from prompts.build import build_prompt
from prompts.presets import find_preset
from prompts.spec import PosterPrompt


def register(commands: argparse._SubParsersAction) -> None:
    """Add the prompt builder's subcommands."""
    parser = commands.add_parser(
        "prompt",
        help="turn a chat request into a structured WebUI prompt",
        description="Turn a chat request (Chinese or English) or a raw WebUI prompt into the "
        "structured prompt the engine runs. Schema: docs/prompts.md.",
    )
    parser.add_argument("request", help='e.g. "达达骑士在雪地里送快递，圣诞海报，竖版，来4张"')
    parser.add_argument("--json", action="store_true", help="print the prompt as JSON")
    parser.add_argument("--preset", help="apply a [presets.NAME] template from config")
    parser.add_argument("--ip", help="the IP when the request names none (default: config)")
    llm = parser.add_mutually_exclusive_group()
    llm.add_argument(
        "--llm",
        dest="use_llm",
        action="store_true",
        default=None,
        help="use the LLM step even if llm.enabled is false",
    )
    llm.add_argument(
        "--no-llm", dest="use_llm", action="store_false", help="template step only (offline)"
    )
    parser.set_defaults(handler=prompt_command)


def prompt_command(args: argparse.Namespace, config: Config) -> int:
    """Print the structured prompt for `args.request`."""
    template = find_preset(config, args.preset) if args.preset else None
    prompt = asyncio.run(
        build_prompt(args.request, config, template=template, ip_name=args.ip, use_llm=args.use_llm)
    )
    if args.json:
        print(json.dumps(prompt.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(describe(prompt))
    return 0


def describe(prompt: PosterPrompt) -> str:
    """The prompt as WebUI users read it: prompt, negative prompt, then the parameters line."""
    size = f"{prompt.width}x{prompt.height}"
    if prompt.targets:
        # A typed 1080x1920 is named by its size already; a channel shows both.
        named = [
            t.name if t.name.startswith(f"{t.width}x") else f"{t.name} {t.width}x{t.height}"
            for t in prompt.targets
        ]
        size += " -> " + ", ".join(named)
    lines = [prompt.prompt]
    if prompt.negative_prompt:
        lines.append(f"Negative prompt: {prompt.negative_prompt}")
    lines.append(
        f"Steps: {prompt.steps}, Sampler: {prompt.sampler_name}, CFG scale: {prompt.cfg_scale:g}, "
        f"Seed: {prompt.seed}, Size: {size}, Batch: {prompt.batch_size}x{prompt.n_iter}, "
        f"Hires: {'on' if prompt.enable_hr else 'off'}, Source: {prompt.source}"
    )
    if prompt.title or prompt.subtitle or prompt.cta:
        lines.append(f"Title: {prompt.title}  Subtitle: {prompt.subtitle}  CTA: {prompt.cta}")
    lines += [f"Note: {note}" for note in prompt.notes]
    return "\n".join(lines)
