"""Model files for tests: random LoRAs in both layouts, a tiny ESRGAN upscaler, a tiny face
restorer and a face detector file."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine.diffusion.lora_format import peft_to_kohya

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def random_lora_state(pipe, rank: int = 4, alpha: float = 2.0, seed: int = 3):
    """peft LoRA weights with random non-zero up matrices ("trained-looking"), and their configs.

    Adds adapters to `pipe`: pass a throwaway pipeline.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    configs = {}
    states = {}
    for part, targets in (("unet", UNET_TARGETS), ("text_encoder", TEXT_TARGETS)):
        config = LoraConfig(
            r=rank, lora_alpha=alpha, init_lora_weights=False, target_modules=targets
        )
        model = getattr(pipe, part)
        model.add_adapter(config)
        states[part] = get_peft_model_state_dict(model)
        configs[part] = config
    return states, configs


def write_lora_pair(pipe, folder: Path, name: str, seed: int = 3) -> tuple[Path, Path]:
    """The same random LoRA as `<name>_kohya.safetensors` and `<name>_diffusers.safetensors`."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    states, configs = random_lora_state(pipe, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    kohya = folder / f"{name}_kohya.safetensors"
    alpha = configs["unet"].lora_alpha
    save_file(
        peft_to_kohya(states["unet"], "lora_unet", alpha)
        | peft_to_kohya(states["text_encoder"], "lora_te", alpha),
        kohya,
    )
    diffusers_file = folder / f"{name}_diffusers.safetensors"
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=convert_state_dict_to_diffusers(states["unet"]),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(states["text_encoder"]),
        weight_name=diffusers_file.name,
        unet_lora_adapter_metadata=configs["unet"].to_dict(),
        text_encoder_lora_adapter_metadata=configs["text_encoder"].to_dict(),
    )
    return kohya, diffusers_file


def write_tiny_esrgan(path: Path) -> Path:
    """A 4× ESRGAN with random weights, in the layout spandrel detects."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


RESNET_TO_LDM = {  # diffusers' resnet names → the original ControlNet's
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def tiny_controlnet(unet, seed: int = 5):
    """A ControlNet of the tiny UNet (`ControlNetModel.from_unet`) whose zero convolutions got
    random weights, so it changes pictures as a trained one does."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet)
    for name, parameter in controlnet.named_parameters():
        if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")) or (
            "conv_out" in name
        ):
            torch.nn.init.normal_(parameter, std=0.3)
    return controlnet


def ldm_controlnet_keys(state: dict, layers_per_block: int) -> dict:
    """A diffusers-layout ControlNet state under the original ControlNet/LDM names (the inverse
    of diffusers' `convert_controlnet_checkpoint`), as WebUI users' files have them."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    fixed = DIFFUSERS_TO_LDM_MAPPING["controlnet"]["layers"]
    ldm = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if key in fixed:
            name = fixed[key]
        elif parts[0] == "down_blocks":
            block, kind, layer = int(parts[1]), parts[2], int(parts[3])
            first = 1 + block * (layers_per_block + 1)
            if kind == "downsamplers":
                name = f"input_blocks.{first + layers_per_block}.0.op.{parts[-1]}"
            elif kind == "resnets":
                rest = ".".join([RESNET_TO_LDM.get(parts[4], parts[4]), *parts[5:]])
                name = f"input_blocks.{first + layer}.0.{rest}"
            else:
                name = f"input_blocks.{first + layer}.1.{'.'.join(parts[4:])}"
        elif parts[0] == "mid_block":
            index = {"resnets.0": 0, "attentions.0": 1, "resnets.1": 2}[".".join(parts[1:3])]
            rest = parts[3:]
            if parts[1] == "resnets":
                rest = [RESNET_TO_LDM.get(rest[0], rest[0]), *rest[1:]]
            name = f"middle_block.{index}.{'.'.join(rest)}"
        elif parts[0] == "controlnet_down_blocks":
            name = f"zero_convs.{parts[1]}.0.{parts[2]}"
        elif parts[0] == "controlnet_mid_block":
            name = f"middle_block_out.0.{parts[1]}"
        elif parts[:2] == ["controlnet_cond_embedding", "blocks"]:
            name = f"input_hint_block.{2 * (int(parts[2]) + 1)}.{parts[3]}"
        else:
            raise AssertionError(f"no LDM name for {key}")
        ldm["control_model." + name] = tensor.contiguous()
    return ldm


def write_tiny_controlnet(unet, path: Path, layout: str = "diffusers", seed: int = 5) -> Path:
    """The tiny ControlNet as one .safetensors file in the diffusers or the LDM layout."""
    state = {k: v.contiguous() for k, v in tiny_controlnet(unet, seed).state_dict().items()}
    if layout == "ldm":
        state = ldm_controlnet_keys(state, unet.config.layers_per_block)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def write_tiny_restoreformer(path: Path) -> Path:
    """A RestoreFormer (the real architecture, few channels) with random weights, saved the way
    spandrel detects it: a face restorer for models/GFPGAN."""
    from spandrel.architectures.RestoreFormer import RestoreFormer

    torch.manual_seed(0)
    # Six levels take a 512×512 face down to 16×16, where its attention runs (GroupNorm needs
    # channels in multiples of 32).
    model = RestoreFormer(
        n_embed=16, embed_dim=32, ch=32, ch_mult=(1,) * 6, num_res_blocks=1, z_channels=32
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def write_face_detector(
    path: Path,
    size: tuple[int, int],
    box: tuple[int, int, int, int],
    landmarks: list[tuple[float, float]],
) -> Path:
    """A YuNet-format ONNX face detector (the outputs OpenCV's FaceDetectorYN decodes) that
    finds one face, `box` with `landmarks`, in any width×height picture: it stands in for YuNet's
    trained weights, which cannot be fetched offline, as random weights do for the models."""
    import numpy as np

    width, height = size
    x, y, w, h = box
    stride = 8  # the face is reported by one cell of the finest grid
    cols = width // stride
    column, row = int((x + w / 2) // stride), int((y + h / 2) // stride)
    cell = row * cols + column
    outputs = {}
    for grid in (8, 16, 32):
        count = (width // grid) * (height // grid)
        score, boxes, points = (np.zeros((1, count, n), np.float32) for n in (1, 4, 10))
        if grid == stride:
            score[0, cell] = 1
            centre = ((x + w / 2) / stride - column, (y + h / 2) / stride - row)
            boxes[0, cell] = [*centre, np.log(w / stride), np.log(h / stride)]
            points[0, cell] = [
                v / stride - offset
                for point in landmarks
                for v, offset in zip(point, (column, row), strict=True)
            ]
        outputs |= {f"cls_{grid}": score, f"obj_{grid}": score, f"bbox_{grid}": boxes}
        outputs[f"kps_{grid}"] = points

    class Detector(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, value in outputs.items():
                self.register_buffer(name, torch.from_numpy(value))

        def forward(self, picture: torch.Tensor):
            zero = picture.mean() * 0  # the outputs follow the input, as a network's do
            return tuple(getattr(self, name) + zero for name in outputs)

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter: no onnxscript needed for it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            Detector(),
            torch.zeros(1, 3, height, width),
            str(path),
            input_names=["input"],
            output_names=list(outputs),
            dynamo=False,
        )
    return path


def write_openpose_annotator(path: Path, flat_names: bool = False) -> Path:
    """The openpose body network (its real architecture, 52M parameters) with random weights
    except the last heatmap layer, zeroed: no keypoint is found, so a run is quick and its
    map black. `flat_names` writes the original .pth's tensor names (`conv1_1.weight`)."""
    from engine.diffusion.openpose import BodyPoseModel

    torch.manual_seed(0)
    network = BodyPoseModel()
    torch.nn.init.zeros_(network.model6_2.Mconv7_stage6_L2.weight)
    torch.nn.init.zeros_(network.model6_2.Mconv7_stage6_L2.bias)
    state = network.state_dict()
    if flat_names:
        state = {name.split(".", 1)[1]: value for name, value in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path
