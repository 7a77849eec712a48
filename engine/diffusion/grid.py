"""XYZ plot like WebUI's: one image per combination of axis values, in a labelled grid PNG.

Axes: `versions` (LoRA names, e.g. dada-v2,dada-v3), `weights` (LoRA weights), `seeds`, and
optionally `sampler`, `steps`, `cfg`. Axes with several values become X, then Y, then Z (a Z
axis gives one grid per value, side by side, as WebUI draws it); single values are fixed
settings. Every cell is rendered through `Engine.txt2img` with `<lora:version:weight>` appended
to the prompt, so a cell is exactly the poster that version would make.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from engine.diffusion.registry import Registry
from engine.training.versions import version_name
from posterbot.config import Config

# How a request field is set from each axis, and the label WebUI would print.
AXES = {
    "weights": ("weight", float, "Weight"),
    "versions": ("version", str, "LoRA"),
    "models": ("model", str, "Checkpoint"),
    "seeds": ("seed", int, "Seed"),
    "sampler": ("sampler_name", str, "Sampler"),
    "steps": ("steps", int, "Steps"),
    "cfg": ("cfg_scale", float, "CFG"),
}
MAX_CELLS = 64  # a grid larger than this takes minutes of GPU time and is unreadable in chat
CJK_FONTS = [  # a font that can write 中文 labels, where the host has one
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/System/Library/Fonts/PingFang.ttc",
]


@dataclass
class Axis:
    name: str  # a key of AXES
    values: list

    def label(self, value) -> str:
        return f"{AXES[self.name][2]}: {value}"


@dataclass
class GridResult:
    image: Image.Image
    x: Axis | None
    y: Axis | None
    z: Axis | None
    cells: list[dict] = field(default_factory=list)  # {x, y, z, seed, infotext} per cell

    def png(self) -> bytes:
        import io

        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG")
        return buffer.getvalue()


def parse_axes(spec: dict[str, str]) -> dict[str, Axis]:
    """`{"weights": "0.6,0.8", "versions": "dada-v1,dada-v2"}` → typed axes (ValueError naming
    the axis for an unknown name or a bad value)."""
    axes = {}
    for name, text in spec.items():
        if name not in AXES:
            raise ValueError(f"{name}: unknown axis (known: {', '.join(AXES)})")
        kind = AXES[name][1]
        try:
            values = [kind(v.strip()) for v in str(text).split(",") if v.strip()]
            if kind is float and not all(math.isfinite(v) for v in values):
                raise ValueError  # nan and inf parse as floats but render black images
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a list of {kind.__name__}") from None
        if not values:
            raise ValueError(f"{name}: needs at least one value")
        axes[name] = Axis(name, values)
    return axes


def plan(axes: dict[str, Axis]) -> tuple[list[Axis], dict[str, object]]:
    """The varying axes in X, Y, Z order (AXES order) and the fixed settings."""
    varying = [axes[n] for n in AXES if n in axes and len(axes[n].values) > 1]
    fixed = {n: axes[n].values[0] for n in AXES if n in axes and len(axes[n].values) == 1}
    if len(varying) > 3:
        names = ", ".join(a.name for a in varying)
        raise ValueError(f"axes: at most 3 may have several values (X, Y, Z), got {names}")
    cells = 1
    for axis in varying:
        cells *= len(axis.values)
    if cells > MAX_CELLS:
        raise ValueError(f"axes: {cells} images is more than {MAX_CELLS}; use fewer values")
    return varying, fixed


def xyz_request(
    config: Config, ip_name: str, axes: dict[str, str], prompt: str | None = None
) -> dict[str, Any]:
    """The checked request of an IP's grid: versions by full name (`v3` → `dada-v3`), the
    trigger prompt unless one is given, the IP's negative prompt (ValueError naming a field)."""
    ip = config.find_ip(ip_name)
    axes = {name: str(values) for name, values in axes.items()}
    if "versions" in axes:
        axes["versions"] = ",".join(version_name(ip.name, v) for v in axes["versions"].split(","))
    plan(parse_axes(axes))
    if "models" in axes:
        registry = Registry(config)
        for name in parse_axes({"models": axes["models"]})["models"].values:
            try:
                registry.checkpoint(name)
            except (ValueError, FileNotFoundError) as exc:
                raise ValueError(f"models: {exc}") from None
    if prompt is not None and not prompt.strip():
        raise ValueError("prompt: must not be empty (leave it out for the trigger word)")
    # Without a versions axis the grid shows the LoRA the IP's posters use now.
    lora = {"name": ip.lora, "weight": ip.lora_weight} if ip.lora else None
    if "versions" not in axes and lora is not None:
        try:
            Registry(config).lora(ip.lora)
        except ValueError:
            if "weights" in axes:
                raise ValueError(
                    f"weights: {ip.name}'s LoRA {ip.lora!r} is not installed; "
                    "compare trained versions with versions=v1,v2"
                ) from None
            lora = None
    return {
        "ip": ip.name,
        "prompt": prompt or f"{ip.trigger}, solo, full body",
        "axes": axes,
        "base": {"negative_prompt": ip.negative_prompt},
        "lora": lora,
    }


def cell_request(
    prompt: str, settings: dict[str, Any], base: dict | None, lora: dict | None
) -> dict[str, Any]:
    """The txt2img request of one cell: its axis values over `base`, the LoRA tag appended."""
    own = lora or {}
    request = dict(base or {})
    request["prompt"] = prompt
    if lora_name := settings.get("versions") or own.get("name"):
        weight = settings.get("weights", own.get("weight", 1.0))
        request["prompt"] = f"{prompt} <lora:{lora_name}:{weight:g}>"
    for name in ("seeds", "sampler", "steps", "cfg"):
        if name in settings:
            request[AXES[name][0]] = settings[name]
    request.setdefault("seed", 0)
    return request


def cell_requests(request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every cell's txt2img request of a checked `xyz_request`, as `render_xyz` renders them."""
    varying, fixed = plan(parse_axes(request["axes"]))
    combos = itertools.product(*[[(axis.name, v) for v in axis.values] for axis in varying])
    return [
        cell_request(request["prompt"], fixed | dict(combo), request["base"], request["lora"])
        for combo in combos
    ]


def render_xyz(
    engine,
    prompt: str,
    spec: dict[str, str],
    base: dict | None = None,
    lora: dict | None = None,
    engine_for: Callable[[str | None], Any] | None = None,
) -> GridResult:
    """Render the grid for `prompt` (trigger and tags; no LoRA tag) over the axes in `spec`.

    `base`: other request fields (negative prompt, size ...). `lora` (`{"name", "weight"}`, the
    IP's own): used where there is no `versions` axis, and its weight where there is no
    `weights` axis (else 1). Without either, no LoRA is added. A `models` axis (checkpoint
    names, WebUI's "Checkpoint name") needs `engine_for(name)`, which gives the engine of a
    checkpoint; cells are rendered one checkpoint after another, so each loads once.
    """
    from engine.diffusion.params import from_request

    # 1. check the axes
    axes = parse_axes(spec)
    varying, fixed = plan(axes)
    padded = varying + [None] * (3 - len(varying))
    x, y, z = padded

    if "models" in axes and engine_for is None:
        raise ValueError("models: this grid cannot switch checkpoints; leave the axis out")

    # 2. render every cell, one checkpoint at a time
    images: dict[tuple, Image.Image] = {}
    cells: dict[tuple, dict] = {}
    values = [axis.values if axis else [None] for axis in padded]
    combos = list(itertools.product(*values))
    settings_of = {
        combo: fixed | {a.name: v for a, v in zip(padded, combo, strict=True) if a is not None}
        for combo in combos
    }
    models = axes["models"].values if "models" in axes else []
    by_model = sorted(combos, key=lambda c: models.index(settings_of[c]["models"]) if models else 0)
    own = lora or {}
    for combo in by_model:
        settings = settings_of[combo]
        request = cell_request(prompt, settings, base, own)
        cell_engine = engine_for(settings["models"]) if "models" in settings else engine
        params = from_request(request, cell_engine.config.generation, cell_engine.config.limits)
        result = cell_engine.txt2img(params)
        images[combo] = result.images[0]
        cells[combo] = {
            "x": combo[0],
            "y": combo[1],
            "z": combo[2],
            "seed": result.seeds[0],
            "infotext": result.infotexts[0],
        }

    # 3. draw the labelled grid(s); cells listed in grid order
    return GridResult(draw_grid(images, x, y, z), x, y, z, [cells[c] for c in combos])


def _font(size: int):
    for path in CJK_FONTS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def draw_grid(images: dict[tuple, Image.Image], x: Axis | None, y: Axis | None, z: Axis | None):
    """Cells in rows (Y) and columns (X) with labels on top and left; Z grids side by side."""
    first = next(iter(images.values()))
    cell_w, cell_h = first.size
    font = _font(max(12, cell_h // 10))
    xs, ys, zs = (a.values if a else [None] for a in (x, y, z))
    labels = [a.label(v) for a in (x, y, z) if a for v in a.values]
    text_w = max((font.getbbox(t)[2] for t in labels), default=0) + 12
    line_h = font.getbbox("Ag中")[3] + 10
    left = text_w if y else 0
    top = line_h * ((1 if x else 0) + (1 if z else 0))
    grid_w = left + cell_w * len(xs)
    canvas = Image.new("RGB", (grid_w * len(zs), top + cell_h * len(ys)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, zv in enumerate(zs):
        origin = k * grid_w
        if z:
            draw.text((origin + left + 4, 4), z.label(zv), fill="black", font=font)
        for i, xv in enumerate(xs):
            if x:
                draw.text(
                    (origin + left + i * cell_w + 4, top - line_h + 4),
                    x.label(xv),
                    fill="black",
                    font=font,
                )
        for j, yv in enumerate(ys):
            if y:
                draw.text(
                    (origin + 4, top + j * cell_h + cell_h // 2 - line_h // 2),
                    y.label(yv),
                    fill="black",
                    font=font,
                )
            for i, xv in enumerate(xs):
                canvas.paste(images[(xv, yv, zv)], (origin + left + i * cell_w, top + j * cell_h))
    return canvas
