"""What WebUI's API lists besides models and samplers, and the option keys scripts read: styles
(our presets plus a WebUI `styles.csv` in the data folder), textual-inversion embeddings,
hypernetworks, the command-line flags, and WebUI's option defaults.

Everything here reads files and config only: no torch, no queue.
"""

from __future__ import annotations

import csv
import logging
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.diffusion.embeddings import describe
from engine.service.http import blocking, service
from posterbot.config import Config
from posterbot.errors import Refusal

log = logging.getLogger(__name__)

OPTION_DEFAULTS_FILE = Path(__file__).with_name("webui_options.toml")
STYLES_FILE = "styles.csv"  # WebUI's own file, so a WebUI install's styles keep working
MAX_STYLES_BYTES = 1 << 20


@cache
def option_defaults() -> dict[str, Any]:
    """WebUI's option keys with WebUI's defaults (where posterbot behaves otherwise, its own
    value, e.g. `randn_source`: noise is always drawn on the CPU)."""
    with open(OPTION_DEFAULTS_FILE, "rb") as file:
        return tomllib.load(file)["options"]


@dataclass(frozen=True)
class Style:
    """A WebUI style: text added to the prompt and the negative prompt."""

    name: str
    prompt: str
    negative_prompt: str

    def apply(self, prompt: str, negative: str) -> tuple[str, str]:
        return _styled(prompt, self.prompt), _styled(negative, self.negative_prompt)


def _styled(text: str, style: str) -> str:
    """WebUI's rule: a style with `{prompt}` wraps the text, any other is appended to it."""
    if not style:
        return text
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    return f"{text}, {style}" if text else style


def styles(config: Config) -> dict[str, Style]:
    """Our presets that carry style tags (or a negative prompt), then the data folder's
    `styles.csv` (WebUI's columns: name, prompt, negative_prompt)."""
    found = {
        name: Style(
            name,
            ", ".join(preset.style_tags or []),
            str(preset.settings.get("negative_prompt", "")),
        )
        for name, preset in config.presets.items()
        if preset.style_tags or preset.settings.get("negative_prompt")
    }
    path = config.data_dir / STYLES_FILE
    try:
        if path.stat().st_size > MAX_STYLES_BYTES:
            log.warning("ignoring %s: larger than %d bytes", path, MAX_STYLES_BYTES)
            return found
        with open(path, encoding="utf-8-sig", newline="") as file:
            for row in csv.DictReader(file):
                name = (row.get("name") or "").strip()
                if name:
                    prompt, negative = row.get("prompt") or "", row.get("negative_prompt") or ""
                    found[name] = Style(name, prompt, negative)
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        log.warning("ignoring %s: %s", path, exc)
    return found


def apply_styles(request: dict[str, Any], names: Any, config: Config) -> None:
    """Apply a WebUI request's `styles` (names, in order) to its prompt and negative prompt."""
    if not names:
        return
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise Refusal("styles", "must be a list of style names")
    known = styles(config)
    prompt, negative = request.get("prompt") or "", request.get("negative_prompt") or ""
    for name in names:
        if name not in known:
            detail = f"no style {name!r} (known: {', '.join(known) or 'none'})"
            raise Refusal("styles", detail, "style", name=name)
        prompt, negative = known[name].apply(prompt, negative)
    request["prompt"], request["negative_prompt"] = prompt, negative


async def webui_prompt_styles(request: web.Request) -> web.Response:
    """Styles in WebUI's shape."""
    found = await blocking(styles, service(request).config)
    return web.json_response(
        [
            {"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
            for s in found.values()
        ]
    )


async def webui_embeddings(request: web.Request) -> web.Response:
    """Embeddings in models/embeddings, as WebUI lists them: loadable ones and skipped files."""

    def listing() -> dict[str, Any]:
        loaded, skipped = {}, {}
        for name, path in service(request).registry.embeddings().items():
            described = describe(path)
            if described is None:
                skipped[name] = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                                 "shape": None, "vectors": 0}  # fmt: skip
            else:
                loaded[name] = described
        return {"loaded": loaded, "skipped": skipped}

    return web.json_response(await blocking(listing))


async def webui_hypernetworks(request: web.Request) -> web.Response:
    """None: the engine does not run hypernetworks (LoRAs replaced them), so none is offered."""
    return web.json_response([])


async def webui_cmd_flags(request: web.Request) -> web.Response:
    """The flags WebUI scripts read, with what this engine does in their place."""
    config = service(request).config
    return web.json_response(
        {
            "api": True,
            "nowebui": True,
            "listen": config.engine.host not in ("127.0.0.1", "localhost", "::1"),
            "port": config.engine.port,
            "data_dir": str(config.data_dir),
            "ckpt_dir": str(config.checkpoints_dir),
            "lora_dir": str(config.loras_dir),
            "vae_dir": str(config.vae_dir),
            "esrgan_models_path": str(config.upscalers_dir),
            "gfpgan_models_path": str(config.face_restorers_dir),
            "controlnet_dir": str(config.controlnet_dir),
            "embeddings_dir": str(config.embeddings_dir),
            "hypernetwork_dir": None,
            "no_half": config.models.dtype == "float32",
            "medvram": False,
            "lowvram": False,
            "xformers": False,
            "opt_sdp_attention": True,  # torch's scaled dot-product attention, diffusers' default
            "device_id": None,
            "skip_torch_cuda_test": False,
        }
    )
