"""What a txt2img request may ask for, with WebUI's field names and checks (no torch here).

The CLI, the HTTP service and the WebUI-compatible API all build a `GenerationParams` with
`from_request`, which fills defaults from config and raises ValueError naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

from engine.diffusion.controlnet_units import ControlUnit
from engine.diffusion.samplers import check_sampler
from posterbot.config import MAX_LORA_WEIGHT, GenerationSettings, LimitsConfig
from posterbot.errors import Refusal
from prompts.spec import MAX_SEED
from prompts.syntax import LoraTag, estimate_chunks, extract_loras

log = logging.getLogger(__name__)

LATENT_FACTOR = 8  # the VAE's downscale; sizes must divide by it


@dataclass(frozen=True, kw_only=True)
class GenerationParams(GenerationSettings):
    """One txt2img request: the prompt, extra LoRAs and the generation settings (WebUI names)."""

    prompt: str
    loras: list[LoraTag] = field(default_factory=list)  # besides <lora:> tags in the prompt
    tiling: bool = False  # seamless: circular padding in the UNet's and the VAE's convolutions
    restore_faces: bool = False  # after sampling (and hires), as WebUI does
    face_restoration_model: str = ""  # a family (GFPGAN, RestoreFormer) or file; "" = GFPGAN first
    # img2img and inpainting (WebUI's names): stored pictures ("input:<sha256>", see
    # engine/service/inputs.py), image i of a batch starting from init_images[i % count]
    init_images: list[str] = field(default_factory=list)
    resize_mode: int = 0  # engine/diffusion/img2img.py RESIZE_MODES
    mask: str = ""  # white = repaint; "" = img2img of the whole picture
    mask_blur: int = 4
    inpainting_fill: int = 1  # img2img.MASKED_CONTENT: 1 = start from the original
    inpaint_full_res: bool = True  # "only masked": repaint the masked region at full size
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: bool = False
    # WebUI's "SD upscale" script: the picture upscaled by this factor (0 = off), then redrawn
    # in width×height tiles overlapping by sd_upscale_overlap pixels
    sd_upscale_scale: float = 0.0
    sd_upscale_overlap: int = 64
    sd_upscale_upscaler: str = "Lanczos"
    # ControlNet units, checked in the service (engine/diffusion/controlnet_units.py)
    controlnet: list[ControlUnit] = field(default_factory=list)

    @property
    def is_img2img(self) -> bool:
        return bool(self.init_images)

    @property
    def image_count(self) -> int:
        return self.batch_size * self.n_iter

    def hires_size(self) -> tuple[int, int]:
        """Final size with hires fix: the target size if given, else first pass × hr_scale."""
        if not self.enable_hr:
            return self.width, self.height
        if self.hr_resize_x or self.hr_resize_y:
            # One side given keeps the aspect ratio, like WebUI's "Resize width/height to".
            x = self.hr_resize_x or round(self.width * self.hr_resize_y / self.height)
            y = self.hr_resize_y or round(self.height * self.hr_resize_x / self.width)
        else:
            x, y = round(self.width * self.hr_scale), round(self.height * self.hr_scale)
        return _round_down(x), _round_down(y)

    def hires_steps(self) -> int:
        return self.hr_second_pass_steps or self.steps

    def all_loras(self) -> tuple[str, list[LoraTag]]:
        """The prompt text without `<lora:>` tags, and every LoRA asked for (tags, then flags)."""
        text, tags = extract_loras(self.prompt)
        return text, tags + list(self.loras)

    def seeds(self) -> tuple[list[int], list[int]]:
        """Per-image seeds and variation seeds, by WebUI's rules.

        Without variation strength image i gets seed + i; with it, every image keeps the seed
        and the variation seed increments instead.
        """
        count = self.image_count
        if self.subseed_strength > 0:
            return [self.seed] * count, [self.subseed + i for i in range(count)]
        return [self.seed + i for i in range(count)], [self.subseed] * count

    def batch_key(self) -> str:
        """Requests with equal keys can share one pipeline call: everything but the prompts,
        seeds and image counts must match (LoRA weights included).
        """
        _, tags = self.all_loras()
        weights: dict[str, float] = {}
        for tag in tags:
            weights[tag.name] = weights.get(tag.name, 0.0) + tag.weight
        shared = {name: getattr(self, name) for name in BATCH_FIELDS}
        controlnet = [unit.to_dict() for unit in self.controlnet]
        return json.dumps(
            {**shared, "loras": sorted(weights.items()), "controlnet": controlnet}, sort_keys=True
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["loras"] = [{"name": t.name, "weight": t.weight} for t in self.loras]
        return data


def _round_down(value: int) -> int:
    return max(LATENT_FACTOR, value // LATENT_FACTOR * LATENT_FACTOR)


# What must match for requests to be rendered in one pipeline call.
BATCH_FIELDS = (
    "sampler_name",
    "steps",
    "cfg_scale",
    "width",
    "height",
    "clip_skip",
    "subseed_strength",
    "enable_hr",
    "hr_scale",
    "hr_upscaler",
    "hr_second_pass_steps",
    "hr_resize_x",
    "hr_resize_y",
    "denoising_strength",
    "tiling",
    "restore_faces",
    "face_restoration_model",
    "init_images",
    "resize_mode",
    "mask",
    "mask_blur",
    "inpainting_fill",
    "inpaint_full_res",
    "inpaint_full_res_padding",
    "inpainting_mask_invert",
    "sd_upscale_scale",
    "sd_upscale_overlap",
    "sd_upscale_upscaler",
)

_FIELD_TYPES = {f.name: f.type for f in dataclasses.fields(GenerationParams)}


def _coerce(name: str, value: Any) -> Any:
    kind = _FIELD_TYPES[name]
    if name == "loras":
        if not isinstance(value, list):
            raise ValueError(f"loras: must be a list of {{name, weight}}, not {value!r}")
        return [_lora(item) for item in value]
    if name == "controlnet":  # units as the service's check wrote them into the job
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise Refusal(name, "must be a list of checked ControlNet units")
        return [ControlUnit.from_dict(unit) for unit in value]
    if name == "init_images":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Refusal(name, "must be a list of pictures")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{name}: must be true or false, not {value!r}")
        return value
    if kind in ("int", "float"):
        return number(name, value, whole=kind == "int")
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be text, not {value!r}")
    return value


def number(name: str, value: Any, whole: bool = False) -> int | float:
    """A JSON number as an int (`whole`) or a float; Refusal naming `name` for anything else,
    NaN and infinities included (JSON's `NaN`, `Infinity` and `1e400` parse as such)."""
    what = "a whole number" if whole else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refusal(name, f"must be {what}, not {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise Refusal(name, f"must be a finite number, not {value!r}")
    if whole:
        if value != int(value):
            raise Refusal(name, f"must be {what}, not {value!r}")
        return int(value)
    try:
        return float(value)
    except OverflowError:  # an integer with hundreds of digits
        raise Refusal(name, "is too large a number") from None


def _lora(item: Any) -> LoraTag:
    if isinstance(item, LoraTag):
        return item
    if isinstance(item, str):
        name, _, weight = item.partition(":")
        try:
            item = {"name": name, "weight": float(weight) if weight else 1.0}
        except ValueError:
            raise Refusal("loras", f"{item!r} is not NAME:WEIGHT") from None
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("name"), str)
        or not item["name"].strip()
    ):
        raise ValueError(f"loras: each entry needs a name, got {item!r}")
    return LoraTag(item["name"].strip(), number("loras", item.get("weight", 1.0)))


def parse_lora_flag(text: str) -> LoraTag:
    """`NAME:WEIGHT` from the command line (weight defaults to 1)."""
    name, _, weight = text.partition(":")
    try:
        return LoraTag(name.strip(), float(weight) if weight else 1.0)
    except ValueError:
        raise ValueError(f"--lora: {text!r} is not NAME:WEIGHT") from None


def from_request(
    request: dict[str, Any], defaults: GenerationSettings, limits: LimitsConfig
) -> GenerationParams:
    """Build checked params from a request dict (unknown fields are an error); what the request
    leaves out (or sends as null) comes from `defaults`, the [generation] table."""
    unknown = sorted(set(request) - set(_FIELD_TYPES))
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field")
    if not isinstance(request.get("prompt"), str):
        raise Refusal("prompt", f"required, text (not {request.get('prompt')!r})")
    given = {name: value for name, value in request.items() if value is not None}
    values = {name: _coerce(name, value) for name, value in (defaults.settings() | given).items()}
    values["sampler_name"] = check_sampler(values["sampler_name"])
    params = GenerationParams(**values)
    check(params, limits)
    return params


def check(params: GenerationParams, limits: LimitsConfig) -> None:
    """Raise ValueError naming the first field that is out of range."""
    check_sampler(params.sampler_name)
    check_text("prompt", params.prompt, limits)
    check_text("negative_prompt", params.negative_prompt, limits)
    _, tags = extract_loras(params.prompt)  # raises on a malformed <lora:> tag
    for field_name, lora in [("prompt", tag) for tag in tags] + [
        ("loras", t) for t in params.loras
    ]:
        check_lora_weight(field_name, lora)
    for name in ("width", "height"):
        value = getattr(params, name)
        if value < 64 or value % LATENT_FACTOR:
            raise ValueError(f"{name}: {value} must be a multiple of 8, at least 64")
        if value % 64:
            log.warning(
                "%s %d is not a multiple of 64; models are trained on multiples of 64", name, value
            )
    for name, low, high in (
        ("steps", 1, limits.max_steps),
        ("batch_size", 1, limits.max_batch_size),
        ("n_iter", 1, limits.max_n_iter),
        ("clip_skip", 1, 12),
        ("hr_second_pass_steps", 0, limits.max_steps),
        ("hr_resize_x", 0, limits.max_side),
        ("hr_resize_y", 0, limits.max_side),
    ):
        check_range(name, getattr(params, name), low, high)
    for name, low, high in (
        ("cfg_scale", 1.0, 30.0),
        ("subseed_strength", 0.0, 1.0),
        ("denoising_strength", 0.0, 1.0),
        ("hr_scale", 1.0, 4.0),
    ):
        check_range(name, getattr(params, name), low, high)
    check_pictures(params)
    for name in ("seed", "subseed"):
        if not -1 <= getattr(params, name) <= MAX_SEED:
            raise ValueError(f"{name}: must be -1 (random) or 0..{MAX_SEED}")
    final_w, final_h = params.hires_size()
    size = {"width": final_w, "height": final_h}
    if max(final_w, final_h) > limits.max_side:
        detail = f"{final_w}x{final_h} exceeds max side {limits.max_side}"
        raise Refusal("width/height", detail, "size_too_large", **size)
    if final_w * final_h > limits.max_pixels:
        detail = f"{final_w}x{final_h} exceeds the limit of {limits.max_pixels} pixels"
        raise Refusal("width/height", detail, "size_too_large", **size)


MAX_INIT_IMAGES = 8  # one per image of the largest batch


def check_pictures(params: GenerationParams) -> None:
    """The img2img and inpainting fields (pictures are checked when they are stored)."""
    if len(params.init_images) > MAX_INIT_IMAGES:
        raise Refusal("init_images", f"at most {MAX_INIT_IMAGES} pictures")
    if params.mask and not params.init_images:
        raise Refusal("mask", "inpainting needs init_images, the picture to repaint")
    for name, low, high in (
        ("resize_mode", 0, 3),
        ("mask_blur", 0, 64),
        ("inpainting_fill", 0, 3),
        ("inpaint_full_res_padding", 0, 256),
    ):
        check_range(name, getattr(params, name), low, high)
    if params.sd_upscale_scale:  # the overlap's bound is the tile's, so only with the script on
        check_range("sd_upscale_scale", params.sd_upscale_scale, 1.0, 4.0)
        overlap_limit = min(params.width, params.height) // 2
        check_range("sd_upscale_overlap", params.sd_upscale_overlap, 0, overlap_limit)
        conflicts = {
            "init_images": (not params.init_images, "SD upscale needs the picture to upscale"),
            "mask": (bool(params.mask), "SD upscale redraws the whole picture, not a mask"),
            "batch_size": (params.batch_size > 1, "SD upscale makes one picture per n_iter"),
            "enable_hr": (params.enable_hr, "SD upscale is the upscale itself: no hires fix"),
        }
        for name, (conflict, why) in conflicts.items():
            if conflict:
                raise Refusal(name, why)


def check_text(name: str, text: str, limits: LimitsConfig) -> None:
    """Refuse a prompt longer than the limits in characters, in UTF-8 bytes, or in the 75-token
    chunks the text encoder runs once each (estimated without a tokenizer: `estimate_chunks`)."""
    if len(text) > limits.max_prompt_chars:
        limit = limits.max_prompt_chars
        raise Refusal(name, f"longer than {limit} characters", "prompt_too_long", limit=limit)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.max_text_bytes:
        limit = limits.max_text_bytes
        detail = f"{size} bytes is more than {limit} (limits.max_text_bytes)"
        raise Refusal(name, detail, "text_too_many_bytes", field=name, bytes=size, limit=limit)
    chunks = estimate_chunks(extract_loras(text)[0] if name == "prompt" else text)
    if chunks > limits.max_prompt_chunks:
        limit = limits.max_prompt_chunks
        detail = f"about {chunks} chunks of 75 tokens, more than {limit} (limits.max_prompt_chunks)"
        raise Refusal(
            name, detail, "prompt_too_many_chunks", field=name, chunks=chunks, limit=limit
        )


def check_lora_weight(name: str, lora: LoraTag) -> None:
    """Refuse a LoRA weight that is not finite or beyond ±MAX_LORA_WEIGHT (NaN renders black)."""
    if not math.isfinite(lora.weight) or abs(lora.weight) > MAX_LORA_WEIGHT:
        shown = lora.weight if math.isfinite(lora.weight) else str(lora.weight)
        raise Refusal(
            name,
            f"{lora.name}'s weight {lora.weight} is outside ±{MAX_LORA_WEIGHT:g}",
            "prompt_weight",
            weight=shown,
            limit=MAX_LORA_WEIGHT,
        )


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Refuse `value` outside `low..high` (`out_of_range`)."""
    if not low <= value <= high:
        detail = f"{value} is outside {low}..{high}"
        raise Refusal(name, detail, "out_of_range", field=name, value=value, low=low, high=high)


def resolve_seeds(params: GenerationParams, rng: random.Random | None = None) -> GenerationParams:
    """Replace seed/subseed -1 with random values (returns a copy)."""
    rng = rng or random.SystemRandom()
    seed = params.seed if params.seed != -1 else rng.randint(0, MAX_SEED)
    subseed = params.subseed if params.subseed != -1 else rng.randint(0, MAX_SEED)
    return dataclasses.replace(params, seed=seed, subseed=subseed)
