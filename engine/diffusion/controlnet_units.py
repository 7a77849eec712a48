"""ControlNet units as the sd-webui-controlnet extension takes them, checked without torch.

A request carries `alwayson_scripts.controlnet.args` (WebUI API) or `controlnet` (/v1/jobs): a
list of unit objects with the extension's field names and defaults (`internal_controlnet/args.py`
`ControlNetUnit`). `parse_units` checks each one in the service, stores its picture with the
`store` it is given (the service's `engine.service.inputs.store_picture`), and returns
`ControlUnit`s the worker runs; a bad unit is refused naming its index and field
(`alwayson_scripts.controlnet.args[1].model`).

Where the extension would quietly repair a value, so do we, because its clients rely on it: a
threshold or processor resolution outside its slider's range (-1 included) becomes the slider's
default. Everything else that is out of range is refused. As in the extension, a unit without
`"enabled": true` is off.

Models live in `models/ControlNet` (`.safetensors` files, or diffusers folders with a
`config.json`), named as the extension lists them: `name [hash]`, where the hash is WebUI's
short legacy one (8 hex digits of the sha256 of 64 KiB at 1 MiB into the file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.diffusion.preprocessors import RESIZE_MODES, find_preprocessor
from engine.diffusion.registry import PICKLE_SUFFIXES, ModelRef, is_sdxl
from engine.diffusion.single_file import read_header
from posterbot.config import Config
from posterbot.errors import Refusal

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_ALIASES = {  # older names the extension still accepts
    "Inner Fit (Scale to Fit)": "Crop and Resize",
    "Outer Fit (Shrink to Fit)": "Resize and Fill",
    "Scale to Fit (Inner Fit)": "Crop and Resize",
    "Envelope (Outer Fit)": "Resize and Fill",
    "Just Resize (Latent upscale)": "Just Resize",
}
FIELD_ALIASES = {"guidance": "guidance_end", "input_image": "image", "mask_image": "mask"}
MAX_UNITS = 4  # each unit runs a ControlNet (about half a UNet) per step; WebUI shows 3
MAX_WEIGHT = 2.0  # the extension's bound
ANNOTATORS = "annotators"  # preprocessor weights, beside the ControlNet models
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
# Fields of the extension's unit that change nothing here (UI state, memory hints, batch and
# AnimateDiff plumbing): accepted and ignored, as the extension ignores unknown fields.
IGNORED = {
    "low_vram", "lowvram", "is_ui", "input_mode", "batch_images", "output_dir", "loopback",
    "save_detected_map", "batch_mask_dir", "animatediff_batch", "batch_modifiers",
    "batch_image_files", "batch_keyframe_idx", "inpaint_crop_input_image",
}  # fmt: skip
# Fields we cannot honour: refused unless left at the extension's default.
UNSUPPORTED = {
    "hr_option": ("Both", "HiResFixOption.BOTH"),
    "advanced_weighting": (None,),
    "effective_region_mask": (None,),
    "ipadapter_input": (None,),
    "union_control_type": ("Unknown",),
    "pulid_mode": ("Fidelity",),
}
LEGACY_HASH_OFFSET, LEGACY_HASH_BYTES = 0x100000, 0x10000  # WebUI's `model_hash`
Store = Callable[[Any, str], str]  # (picture from a request, field) → "input:<sha256>"


@dataclass(frozen=True)
class ControlUnit:
    """One enabled unit as the worker runs it."""

    index: int  # its place in the request's list (the infotext's `ControlNet <index>`)
    module: str
    model: str  # a model's name in models/ControlNet (no hash)
    weight: float = 1.0
    image: str | None = None  # "input:<sha256>"; None in img2img = the init image
    resize_mode: str = "Crop and Resize"
    processor_res: float = -1
    threshold_a: float = -1
    threshold_b: float = -1
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = "Balanced"
    pixel_perfect: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlUnit:
        return cls(**data)

    def infotext(self, model_title: str) -> str:
        """The extension's `ControlNet N` value (its `ControlNetUnit.serialize`)."""
        values = {
            "Module": self.module,
            "Model": model_title,
            "Weight": self.weight,
            "Resize Mode": self.resize_mode,
            "Processor Res": self.processor_res,
            "Threshold A": self.threshold_a,
            "Threshold B": self.threshold_b,
            "Guidance Start": self.guidance_start,
            "Guidance End": self.guidance_end,
            "Pixel Perfect": self.pixel_perfect,
            "Control Mode": self.control_mode,
        }
        return ", ".join(f"{key}: {value}" for key, value in values.items())


# -- models ---------------------------------------------------------------------------------------


def controlnet_models(config: Config) -> dict[str, Path]:
    """ControlNet model name → its `.safetensors` file or diffusers folder, found recursively
    like the extension's list (the annotators folder left out)."""
    root = config.controlnet_dir
    if not root.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if ANNOTATORS in path.relative_to(root).parts:
            continue
        if path.is_file() and path.suffix.lower() == ".safetensors":
            if path.name == DIFFUSERS_WEIGHTS and (path.parent / "config.json").is_file():
                found.setdefault(path.parent.name, path.parent)  # a diffusers folder
            else:
                found.setdefault(path.stem, path)
    return found


def weights_file(path: Path) -> Path:
    """The tensors of a model: the file itself, or a diffusers folder's weights."""
    return path / DIFFUSERS_WEIGHTS if path.is_dir() else path


def legacy_hash(path: Path) -> str:
    """WebUI's short model hash, which the extension shows beside ControlNet names."""
    with open(weights_file(path), "rb") as file:
        file.seek(LEGACY_HASH_OFFSET)
        return hashlib.sha256(file.read(LEGACY_HASH_BYTES)).hexdigest()[:8]


def model_title(name: str, path: Path) -> str:
    return f"{name} [{legacy_hash(path)}]"


def find_model(config: Config, value: Any, field: str = "model") -> tuple[str, Path]:
    """A ControlNet model by name, `name [hash]` or a file name, case-insensitively as the
    extension matches; a pickle of that name is refused as one."""
    if not isinstance(value, str) or not value.strip() or value.strip().lower() == "none":
        raise Refusal(field, "required: a ControlNet model from /controlnet/model_list")
    wanted = value.split(" [", 1)[0].strip().removesuffix(".safetensors").lower()
    models = controlnet_models(config)
    for name, path in models.items():
        if name.lower() == wanted:
            return name, path
    if "/" not in wanted and "\\" not in wanted and not wanted.startswith("."):
        for suffix in PICKLE_SUFFIXES:
            for pickled in config.controlnet_dir.rglob(f"*{suffix}"):
                if pickled.stem.lower() == wanted:
                    raise Refusal(
                        field,
                        f"{pickled.name} is a pickle file, which can run code when loaded; "
                        "only .safetensors ControlNet models are loaded",
                        "pickle_refused",
                        name=value,
                    )
    known = ", ".join(models) or "none in models/ControlNet"
    raise Refusal(
        field,
        f"{value!r} is not a ControlNet model (available: {known})",
        "controlnet_model_missing",
        name=value,
    )


def cross_attention_width(path: Path, field: str) -> int | None:
    """The text-embedding width a ControlNet file attends to (768 SD 1.x, 1024 SD 2.x, 2048
    SDXL), from its header; a file that is no safetensors (a renamed pickle) is refused."""
    try:
        tensors = read_header(weights_file(path))
    except ValueError:
        raise Refusal(
            field,
            f"{path.name} is not a readable .safetensors file (a pickle renamed .safetensors "
            "is refused: it could run code when loaded)",
            "controlnet_model_damaged",
            name=path.name,
        ) from None
    if not any(name.endswith("weight") for name in tensors):
        raise Refusal(field, f"{path.name} holds no weights", "controlnet_model_damaged")
    for name, tensor in tensors.items():
        if name.endswith("attn2.to_k.weight") and len(tensor.shape) == 2:
            return tensor.shape[1]
    return None


def check_family(path: Path, base: ModelRef, field: str) -> None:
    """Refuse a ControlNet made for SDXL on an SD 1.x/2.x model, and the other way round."""
    width = cross_attention_width(path, field)
    sdxl_base = is_sdxl(base)
    if width is None or sdxl_base is None:
        return
    if (width == 2048) != sdxl_base and width in (768, 1024, 2048):
        made_for = "SDXL" if width == 2048 else "SD 1.x/2.x"
        loaded = "an SDXL" if sdxl_base else "an SD 1.x/2.x"
        raise Refusal(
            field,
            f"{path.name} is a ControlNet for {made_for}; the model is {loaded} model",
            "controlnet_model_mismatch",
            name=path.name,
        )


# -- units ----------------------------------------------------------------------------------------


def parse_units(
    config: Config,
    args: Any,
    base: ModelRef,
    store: Store,
    prefix: str = "alwayson_scripts.controlnet.args",
    init_image: bool = False,
) -> list[ControlUnit]:
    """Check a request's ControlNet units; store their pictures. `init_image`: an img2img
    request, whose init image is the picture of a unit that brings none (as in the extension)."""
    if args is None:
        return []
    if not isinstance(args, list):
        raise Refusal(prefix, "must be a list of ControlNet units")
    units = []
    for index, raw in enumerate(args):
        field = f"{prefix}[{index}]"
        if not isinstance(raw, dict):
            raise Refusal(field, "must be an object with the extension's unit fields")
        unit = _unit(config, index, _canonical(raw, field), base, store, field, init_image)
        if unit is not None:
            units.append(unit)
    if len(units) > MAX_UNITS:
        raise Refusal(
            prefix,
            f"{len(units)} enabled units, more than {MAX_UNITS}",
            "controlnet_too_many_units",
            count=len(units),
            limit=MAX_UNITS,
        )
    # diffusers' guess mode (the extension's CFG injection) is one switch for all the units
    controlling = [unit.control_mode == CONTROL_MODES[2] for unit in units]
    if any(controlling) and not all(controlling):
        odd = units[controlling.index(not controlling[0])]
        raise Refusal(
            f"{prefix}[{odd.index}].control_mode",
            f"{CONTROL_MODES[2]!r} must be every enabled unit's mode or none's",
        )
    return units


def _canonical(raw: dict[str, Any], field: str) -> dict[str, Any]:
    """The unit's fields under their current names (legacy aliases mapped, as the extension)."""
    unit = dict(raw)
    for alias, name in FIELD_ALIASES.items():
        if alias in unit:
            if unit.get(name) is not None:
                raise Refusal(f"{field}.{alias}", f"given together with {name}")
            unit[name] = unit.pop(alias)
    return unit


def _unit(
    config: Config,
    index: int,
    raw: dict[str, Any],
    base: ModelRef,
    store: Store,
    field: str,
    init_image: bool,
) -> ControlUnit | None:
    def where(name: str) -> str:
        return f"{field}.{name}"

    # 1. on or off, and the fields we cannot honour
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise Refusal(where("enabled"), f"must be true or false, not {enabled!r}")
    if not enabled:
        return None
    for name, neutral in UNSUPPORTED.items():
        if raw.get(name, neutral[0]) not in neutral:
            raise Refusal(where(name), f"not supported by posterbot's engine, got {raw[name]!r}")
    known = set(ControlUnit.__dataclass_fields__) - {"index"}
    known |= IGNORED | set(UNSUPPORTED) | {"enabled", "mask"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise Refusal(where(unknown[0]), "not a ControlNet unit field")
    # 2. preprocessor and model
    preprocessor = find_preprocessor(raw.get("module", "none"), where("module"))
    preprocessor.check_files(config.controlnet_dir / ANNOTATORS, where("module"))
    name, path = find_model(config, raw.get("model", "None"), where("model"))
    check_family(path, base, where("model"))
    # 3. numbers
    weight = _number(raw, "weight", 1.0, where, 0.0, MAX_WEIGHT)
    start = _number(raw, "guidance_start", 0.0, where, 0.0, 1.0)
    end = _number(raw, "guidance_end", 1.0, where, 0.0, 1.0)
    if start > end:
        raise Refusal(where("guidance_start"), f"{start} is after guidance_end {end}")
    processor_res = _number(raw, "processor_res", -1, where, whole=True)
    threshold_a = _number(raw, "threshold_a", -1.0, where)
    threshold_b = _number(raw, "threshold_b", -1.0, where)
    resolution, threshold_a, threshold_b = preprocessor.settings(
        processor_res, threshold_a, threshold_b
    )
    pixel_perfect = raw.get("pixel_perfect", False)
    if not isinstance(pixel_perfect, bool):
        raise Refusal(where("pixel_perfect"), f"must be true or false, not {pixel_perfect!r}")
    # 4. modes, by name or by the extension's numbers
    resize_mode = _mode(raw.get("resize_mode", 1), RESIZE_MODES, RESIZE_ALIASES, where)
    control_mode = _mode(raw.get("control_mode", 0), CONTROL_MODES, {}, where, "control_mode")
    # 5. the picture
    image = _picture(raw, store, where, init_image)
    return ControlUnit(
        index=index,
        module=preprocessor.name,
        model=name,
        weight=weight,
        image=image,
        resize_mode=resize_mode,
        processor_res=resolution,
        threshold_a=threshold_a,
        threshold_b=threshold_b,
        guidance_start=start,
        guidance_end=end,
        control_mode=control_mode,
        pixel_perfect=pixel_perfect,
    )


def _number(
    raw: dict[str, Any],
    name: str,
    default: float,
    where,
    low: float = -math.inf,
    high: float = math.inf,
    whole: bool = False,
) -> float:
    value = raw.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Refusal(where(name), f"must be a number, not {value!r}")
    if whole:
        if value != int(value):
            raise Refusal(where(name), f"must be a whole number, not {value!r}")
        value = int(value)
    else:
        value = float(value)
    if not low <= value <= high:
        raise Refusal(
            where(name), f"{value} is outside {low}..{high}", "out_of_range", field=where(name)
        )
    return value


def _mode(value: Any, names: tuple[str, ...], aliases: dict[str, str], where, name="resize_mode"):
    if isinstance(value, str):
        value = aliases.get(value.strip(), value.strip())
        if value in names:
            return value
    elif isinstance(value, int) and not isinstance(value, bool):
        if name == "resize_mode" and value == 3:  # "Just Resize (Latent upscale)"
            return names[0]
        if 0 <= value < len(names):
            return names[value]
    choices = ", ".join(f"{i} {mode!r}" for i, mode in enumerate(names))
    raise Refusal(where(name), f"{value!r} is not one of {choices}")


def _picture(raw: dict[str, Any], store: Store, where, init_image: bool) -> str | None:
    """The unit's picture, stored; the extension's shapes: base64, {"image", "mask"}, or
    [image, mask]."""
    image, mask = raw.get("image"), raw.get("mask")
    if isinstance(image, dict):
        image, mask = image.get("image"), image.get("mask") or mask
    elif isinstance(image, list) and len(image) == 2 and not isinstance(image[0], dict):
        image, mask = image
    if mask not in (None, ""):
        raise Refusal(where("mask"), "not supported: no inpaint preprocessor here; leave it out")
    if image in (None, ""):
        if init_image:
            return None
        raise Refusal(where("image"), "required: the picture to take the control map from")
    return store(image, where("image"))


def units_from_request(
    config: Config, request: dict[str, Any], base: ModelRef, store: Store, init_image: bool = False
) -> list[ControlUnit]:
    """Take a request's units out of it: `controlnet` (our /v1 field) or WebUI's
    `alwayson_scripts` (only the ControlNet script; the key in any case, as WebUI matches
    script names, and webuiapi sends "ControlNet")."""
    units = parse_units(
        config, request.pop("controlnet", None), base, store, "controlnet", init_image
    )
    scripts = request.pop("alwayson_scripts", None)
    if scripts in (None, {}):
        return units
    if not isinstance(scripts, dict):
        raise Refusal("alwayson_scripts", "must be an object of script name → {args}")
    for name, script in scripts.items():
        args = script.get("args") if isinstance(script, dict) else script
        if name.lower() == "controlnet":
            if units:
                raise Refusal("alwayson_scripts.controlnet", "given together with controlnet")
            prefix = f"alwayson_scripts.{name}.args"
            units = parse_units(config, args, base, store, prefix, init_image)
        elif args not in (None, [], {}):
            raise Refusal(f"alwayson_scripts.{name}", "not supported by posterbot's engine")
    return units
