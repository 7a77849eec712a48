"""ControlNet models on a loaded base model: loading offline, kept loaded, control maps made.

A model in `models/ControlNet` is a `.safetensors` file in the original ControlNet/LDM layout
(`control_model.input_blocks...`, what WebUI users download) or in the diffusers layout, or a
diffusers folder (`config.json` + weights). A ControlNet is a trained copy of its base model's
UNet encoder, so a single file's architecture is the base UNet's (what diffusers'
`ControlNetModel.from_unet` copies), with the parts a file can vary read from its tensors (the
hint encoder's widths, SDXL's smaller variants' transformer depth); an LDM file's keys are
converted with diffusers' own `convert_controlnet_checkpoint`. Nothing is fetched from a hub,
and a file that does not fit the base model is one line naming it.

`ControlNetSet` keeps recently used models on the device between jobs (LRU, reloaded when the
file changes), as `engine.diffusion.lora.LoraSet` keeps adapters.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.diffusion.controlnet_units import (
    ANNOTATORS,
    CONTROL_MODES,
    ControlUnit,
    controlnet_models,
    find_model,
    model_title,
    weights_file,
)
from engine.diffusion.preprocessors import (
    PREPROCESSORS,
    fit_map,
    pixel_perfect_resolution,
)
from engine.service.inputs import open_picture
from posterbot.config import Config

log = logging.getLogger(__name__)

LDM_PREFIX = "control_model."
Box = tuple[int, int, int, int]  # left, top, right, bottom
UNET_CONFIG_KEYS = (  # what `ControlNetModel.from_unet` copies from the UNet's config
    "in_channels", "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention",
    "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor",
    "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim", "attention_head_dim",
    "num_attention_heads", "use_linear_projection", "class_embed_type", "num_class_embeds",
    "upcast_attention", "resnet_time_scale_shift", "projection_class_embeddings_input_dim",
    "mid_block_type", "transformer_layers_per_block", "encoder_hid_dim", "encoder_hid_dim_type",
    "addition_embed_type", "addition_time_embed_dim",
)  # fmt: skip


def is_ldm_layout(state: dict[str, torch.Tensor]) -> bool:
    return any(key.startswith(LDM_PREFIX) for key in state) or "input_hint_block.0.weight" in state


def architecture(unet_config: dict, state: dict[str, torch.Tensor]) -> dict:
    """The ControlNet config for diffusers-layout weights `state` made from this base UNet."""
    config = {key: unet_config[key] for key in UNET_CONFIG_KEYS if key in unet_config}
    blocks = sorted(
        int(match.group(1))
        for key in state
        if (match := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.weight", key))
    )
    widths = [state["controlnet_cond_embedding.conv_in.weight"].shape[0]]
    widths += [state[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0] for i in blocks[1::2]]
    config["conditioning_embedding_out_channels"] = tuple(widths)
    config["conditioning_channels"] = state["controlnet_cond_embedding.conv_in.weight"].shape[1]
    depths = []
    for block in range(len(config["down_block_types"])):
        layers = {
            int(match.group(1))
            for key in state
            if (
                match := re.match(
                    rf"down_blocks\.{block}\.attentions\.0\.transformer_blocks\.(\d+)\.", key
                )
            )
        }
        depths.append(max(layers) + 1 if layers else 1)
    config["transformer_layers_per_block"] = tuple(depths)
    return config


def load_controlnet(path: Path, unet_config: dict, device: torch.device, dtype: torch.dtype):
    """A ControlNetModel from a models/ControlNet file or folder; ValueError naming it."""
    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.is_dir():
        return ControlNetModel.from_pretrained(str(path), torch_dtype=dtype).to(device)
    # 1. read the tensors (only safetensors: a renamed pickle fails here, never unpickled)
    try:
        state = load_file(str(weights_file(path)))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(
            f"model: {path.name} is not a readable .safetensors file ({exc})"
        ) from None
    # 2. the LDM layout converted to diffusers' names
    if is_ldm_layout(state):
        layers = {"layers_per_block": unet_config["layers_per_block"]}
        state = convert_controlnet_checkpoint(state, layers)
    if "controlnet_cond_embedding.conv_in.weight" not in state:
        raise ValueError(f"model: {path.name} is not a ControlNet (no hint encoder weights)")
    # 3. the architecture, then the weights, which must fit it exactly
    model = ControlNetModel.from_config(architecture(unet_config, state))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape: another base model
        detail = str(exc).split("\n\t")[1] if "\n\t" in str(exc) else str(exc)
        raise ValueError(f"model: {path.name} does not fit the loaded model ({detail})") from None
    if missing or unexpected:
        first = (missing or unexpected)[0]
        what = "lacks" if missing else "has the unknown"
        raise ValueError(
            f"model: {path.name} {what} weight {first}; not a ControlNet for this model"
        )
    # torch's own `to`: diffusers' warns about float32 modules the ControlNet does not have
    return torch.nn.Module.to(model, device, dtype)


class ControlNetSet:
    """ControlNet models loaded on the device, most recently used kept."""

    def __init__(
        self, config: Config, unet_config: dict, device, dtype, cache_size: int = 4
    ) -> None:
        self.config = config
        self.unet_config = dict(unet_config)
        self.device = device
        self.dtype = dtype
        self.cache_size = cache_size
        self._loaded: OrderedDict[str, tuple[Path, float, object]] = OrderedDict()
        self.loads = 0  # models read from disk so far (a warm job reads none)

    def get(self, name: str):
        """The model called `name`, loaded once and kept while it is used."""
        found, path = find_model(self.config, name)
        stamp = weights_file(path).stat().st_mtime
        entry = self._loaded.get(found)
        if entry is not None and entry[:2] == (path, stamp):
            self._loaded.move_to_end(found)
            return entry[2]
        log.info("loading ControlNet %s from %s", found, path)
        model = load_controlnet(path, self.unet_config, self.device, self.dtype).eval()
        self.loads += 1
        self._loaded[found] = (path, stamp, model)
        self._loaded.move_to_end(found)
        while len(self._loaded) > self.cache_size:
            self._loaded.popitem(last=False)
        return model

    def title(self, name: str) -> str:
        """`name [hash]`, as the extension's model list and infotext show it."""
        return model_title(name, controlnet_models(self.config)[name])


@dataclass(frozen=True)
class Control:
    """An enabled unit ready to run: its model, its detected map and its infotext title."""

    unit: ControlUnit
    title: str
    model: object = None  # None: a unit whose guidance window is empty, which does nothing
    detected: np.ndarray | None = None  # the preprocessor's map, before it is fitted to a size

    def image(self, width: int, height: int, region: Box | None = None) -> Image.Image:
        """The map at width×height; with a `region` (inpainting "only masked"), that part of
        the map enlarged to width×height, as the repainted region is."""
        image = Image.fromarray(fit_map(self.detected, width, height, self.unit.resize_mode))
        if region is None:
            return image
        return image.crop(region).resize((width, height), Image.Resampling.LANCZOS)


def detect(unit: ControlUnit, picture: Image.Image, width: int, height: int, annotators: Path):
    """The unit's preprocessor run on its picture (pixel perfect: at the resolution the map
    needs for the generation size)."""
    array = np.asarray(picture.convert("RGB"))
    resolution = unit.processor_res
    if unit.pixel_perfect:
        resolution = pixel_perfect_resolution(*array.shape[:2], (width, height), unit.resize_mode)
    return PREPROCESSORS[unit.module].run(
        array, annotators, resolution, unit.threshold_a, unit.threshold_b
    )


@dataclass(frozen=True)
class Controls:
    """A job's enabled units, and what each diffusers pipeline call needs from them.

    The extension's semantics in diffusers' terms: weight → `controlnet_conditioning_scale`;
    guidance start/end → `control_guidance_start/end` (the same fractions of the steps);
    "ControlNet is more important" (the extension's soft and CFG injection) → `guess_mode`: the
    ControlNet sees only the prompt's half of the batch, its 13 outputs scaled 0.1 … 1 (the
    extension scales by 0.825^(12-i), i.e. 0.099 … 1); "My prompt is more important" (soft
    injection only) → those scales with both halves, by asking the model for guess mode while
    the pipeline's stays off. An empty `Controls` adds nothing, so call sites need no branch.
    Units whose guidance window is empty (start = end; diffusers refuses those) are left out of
    the pipeline and kept for the infotext, as the extension writes every enabled unit.
    """

    every: tuple[Control, ...] = ()

    @property
    def units(self) -> tuple[Control, ...]:
        """The units that run."""
        return tuple(control for control in self.every if control.model is not None)

    def __bool__(self) -> bool:
        return bool(self.units)

    @property
    def model(self):
        """The model the pipeline runs: the one ControlNet, or several combined."""
        from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

        models = [control.model for control in self.units]
        return models[0] if len(models) == 1 else MultiControlNetModel(models)

    def arguments(self, task: str, width: int, height: int, region: Box | None = None) -> dict:
        """The ControlNet arguments of a pipeline call at width×height (txt2img takes the map as
        `image`; img2img and inpainting as `control_image`)."""
        if not self.units:
            return {}
        one = len(self.units) == 1

        def each(values: list):
            return values[0] if one else values

        units = [control.unit for control in self.units]
        return {
            "image" if task == "txt2img" else "control_image": each(
                [control.image(width, height, region) for control in self.units]
            ),
            "controlnet_conditioning_scale": each([unit.weight for unit in units]),
            "control_guidance_start": each([unit.guidance_start for unit in units]),
            "control_guidance_end": each([unit.guidance_end for unit in units]),
            "guess_mode": units[0].control_mode == CONTROL_MODES[2],
        }

    @contextmanager
    def soft_injection(self) -> Iterator[None]:
        """While a pipeline runs: guess-mode scales for "My prompt is more important" units."""
        hooks = [
            control.model.register_forward_pre_hook(_model_guess_mode, with_kwargs=True)
            for control in self.units
            if control.unit.control_mode == CONTROL_MODES[1]
        ]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()

    def infotext(self) -> dict[str, str]:
        """The extension's `ControlNet N` entries."""
        return {f"ControlNet {c.unit.index}": c.unit.infotext(c.title) for c in self.every}


NO_CONTROLS = Controls()


def _model_guess_mode(module, args, kwargs):
    return args, {**kwargs, "guess_mode": True}


def prepare(
    units: list[ControlUnit],
    models: ControlNetSet,
    width: int,
    height: int,
    init_image: Image.Image | None = None,
) -> Controls:
    """Each unit's model (loaded or kept) and detected map; a unit without a picture takes the
    img2img init image, as in the extension."""
    annotators = models.config.controlnet_dir / ANNOTATORS
    prepared = []
    for unit in units:
        title = models.title(unit.model)
        if unit.guidance_start >= unit.guidance_end:
            prepared.append(Control(unit, title))
            continue
        picture = init_image if unit.image is None else open_picture(models.config, unit.image)
        if picture is None:
            raise ValueError(f"controlnet[{unit.index}].image: required without an init image")
        detected = detect(unit, picture, width, height, annotators)
        prepared.append(Control(unit, title, models.get(unit.model), detected))
    return Controls(tuple(prepared))
