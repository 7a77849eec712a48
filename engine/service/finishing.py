"""Finished posters in the engine: the `poster` option of a txt2img job and `POST /v1/posters`.

A request's poster spec (copy, sizes, layout, IP) is checked at submission without touching an
image. Finishing reads a picture's PNG, lays the copy out with `poster.compose` (pure Pillow, no
torch) at each size asked for, and saves each poster's PNG (the picture's infotext kept, plus the
`poster` chunk) beside its editable SVG under `outputs/posters/YYYY-MM-DD/`, where `/v1/outputs`
serves them like every result. Re-laying a picture out (another title, layout or size) is a new
finishing of the same picture: no new generation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image

from engine.diffusion.outputs import save_png
from engine.service.inputs import decode_picture
from poster.compose import (
    Brand,
    Copy,
    check_copy,
    compose_poster,
)
from poster.layout import LAYOUTS
from poster.output import PARAMETERS_KEY, png_bytes, svg_text
from posterbot.config import Config
from posterbot.errors import Refusal
from posterbot.files import atomic_write_text
from prompts.spec import Target

LAYOUT_CHOICES = ("auto", *LAYOUTS)
MAX_TARGETS = 4  # sizes per request; more is a mistake, and each one is a full composition
POSTERS_DIR = "posters"


@dataclass(frozen=True)
class PosterSpec:
    """What a request asks of its finished posters."""

    copy: Copy
    targets: tuple[Target, ...]
    layout: str = "auto"
    ip: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.copy),
            "targets": [asdict(target) for target in self.targets],
            "layout": self.layout,
            "ip": self.ip,
        }


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name) or ""
    if not isinstance(value, str):
        raise Refusal(f"poster.{name}", f"must be text, not {value!r}")
    return value.strip()


def _target(item: Any, index: int) -> Target:
    key = f"poster.targets[{index}]"
    if not isinstance(item, dict):
        raise Refusal(key, 'must be {"name", "width", "height", "dpi"}')
    width, height, dpi = item.get("width"), item.get("height"), item.get("dpi")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or not 64 <= value <= 10000:
            raise Refusal(
                f"{key}.{name}", f"must be a whole number from 64 to 10000, not {value!r}"
            )
    if dpi is not None and (
        isinstance(dpi, bool) or not isinstance(dpi, int) or not 1 <= dpi <= 1200
    ):
        raise Refusal(f"{key}.dpi", f"must be a whole number from 1 to 1200 or null, not {dpi!r}")
    return Target(str(item.get("name") or f"{width}x{height}"), width, height, dpi)


def check_spec(data: Any, config: Config) -> PosterSpec:
    """A request's `poster` object as a spec; Refusal naming the field when it is not usable."""
    if not isinstance(data, dict):
        raise Refusal("poster", "must be an object with title, subtitle, cta, targets, layout")
    known = {"title", "subtitle", "cta", "targets", "layout", "ip"}
    if unknown := sorted(set(data) - known):
        raise Refusal(f"poster.{unknown[0]}", f"unknown field (known: {', '.join(sorted(known))})")
    copy = Copy(_text(data, "title"), _text(data, "subtitle"), _text(data, "cta"))
    ip = _text(data, "ip")
    brand = brand_of(config, ip)  # Refusal for an unknown IP
    try:
        check_copy(copy, brand.footer)
    except Refusal as exc:  # the same refusal, named as this request's field
        detail = str(exc).partition(": ")[2]
        raise Refusal(f"poster.{exc.field}", detail, exc.code, **exc.values) from None
    targets = data.get("targets")
    if not isinstance(targets, list) or not 1 <= len(targets) <= MAX_TARGETS:
        raise Refusal("poster.targets", f"must list 1 to {MAX_TARGETS} sizes")
    layout = data.get("layout") or "auto"
    if layout not in LAYOUT_CHOICES:
        raise Refusal("poster.layout", f"must be one of {', '.join(LAYOUT_CHOICES)}")
    if not (copy.title or copy.subtitle or copy.cta or brand.footer):
        raise Refusal("poster.title", "a poster needs a title, a subtitle or a call to action")
    return PosterSpec(copy, tuple(_target(t, i) for i, t in enumerate(targets)), layout, ip)


def brand_of(config: Config, ip_name: str) -> Brand:
    """The IP's brand kit as `poster.compose` takes it (the default IP's when `ip_name` is "")."""
    ip = config.find_ip(ip_name) if ip_name else config.default_ip_config()
    if ip is None:
        return Brand()
    kit = ip.brand
    logo = Path(kit.logo) if kit.logo else None
    if logo is not None and not logo.is_absolute():
        logo = config.data_dir / logo
    rgb = lambda text: tuple(int(text[i : i + 2], 16) for i in (1, 3, 5))  # noqa: E731
    return Brand(
        logo=logo if logo is not None and logo.is_file() else None,
        logo_corner=kit.logo_corner,
        logo_width=kit.logo_width,
        colours=tuple(rgb(colour) for colour in kit.colours),
        band_colour=rgb(kit.band_colour) if kit.band_colour else None,
        fonts=tuple(kit.fonts),
        footer=kit.footer,
    )


def read_picture(data: bytes) -> tuple[Image.Image, str]:
    """An uploaded or stored picture and its infotext; Refusal for what is not a sane image."""
    picture = decode_picture(data, "image")
    with Image.open(BytesIO(data)) as image:  # decoded safely above; only its text chunks now
        return picture, image.info.get(PARAMETERS_KEY, "")


def finish(
    config: Config, picture_png: bytes, spec: PosterSpec, label: str, folder: Path | None = None
) -> list[dict[str, Any]]:
    """Lay the spec's copy out on the picture at each target size and save PNG + SVG under
    `folder` (default: the outputs folder), in a posters/YYYY-MM-DD/ folder.

    Returns, per target, {"name", "width", "height", "dpi", "layout", "png", "svg"} with paths
    relative to `folder`.
    """
    folder = folder or config.outputs_dir
    picture, parameters = read_picture(picture_png)
    brand = brand_of(config, spec.ip)
    finished = []
    for target in spec.targets:
        poster = compose_poster(
            picture, spec.copy, target.width, target.height, brand=brand, layout_name=spec.layout
        )
        png = png_bytes(poster, spec.copy, parameters=parameters, dpi=target.dpi)
        name = f"{label}-{target.width}x{target.height}-{poster.layout}"
        path = save_png(folder / POSTERS_DIR, name, png)
        atomic_write_text(path.with_suffix(".svg"), svg_text(poster))
        relative = path.relative_to(folder).as_posix()
        finished.append(
            {
                **asdict(target),
                "layout": poster.layout,
                "png": relative,
                "svg": relative.removesuffix(".png") + ".svg",
            }
        )
    return finished
