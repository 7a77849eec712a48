"""Preprocessors that run a network: the lineart annotators (realistic and coarse), and the
loading the annotator networks share (openpose.py uses it too).

The lineart network is the line-drawing generator of "Learning to generate line drawings that convey
geometry and semantics" (Chan, Durand, Isola; informative-drawings, MIT licence), which the
ControlNet 1.1 lineart annotators use: three downsampling convolutions, three residual blocks,
two transposed convolutions, instance norm, a sigmoid. Its weights are the annotators'
`sk_model.pth` (realistic) and `sk_model2.pth` (coarse) saved as `.safetensors` under
`models/ControlNet/annotators/`; pickles are never loaded. Only workers import this (torch).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

RESIDUAL_BLOCKS = 3  # the annotators' generator depth


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(width, width, 3),
            nn.InstanceNorm2d(width),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(width, width, 3),
            nn.InstanceNorm2d(width),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class LineGenerator(nn.Module):
    """Picture (1x3xHxW in 0..1) → line drawing (1x1xHxW, dark lines on white, 0..1)."""

    def __init__(self, residual_blocks: int = RESIDUAL_BLOCKS) -> None:
        super().__init__()
        self.model0 = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, 64, 7), nn.InstanceNorm2d(64), nn.ReLU(True)
        )
        self.model1 = nn.Sequential(
            nn.Conv2d(64, 128, 3, stride=2, padding=1),
            nn.InstanceNorm2d(128),
            nn.ReLU(True),
            nn.Conv2d(128, 256, 3, stride=2, padding=1),
            nn.InstanceNorm2d(256),
            nn.ReLU(True),
        )
        self.model2 = nn.Sequential(*[_Residual(256) for _ in range(residual_blocks)])
        self.model3 = nn.Sequential(
            nn.ConvTranspose2d(256, 128, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(128),
            nn.ReLU(True),
            nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1),
            nn.InstanceNorm2d(64),
            nn.ReLU(True),
        )
        self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


StateNames = Callable[[nn.Module, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _same_names(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return state


def load_network(
    build: Callable[[], nn.Module], path: Path, what: str, names: StateNames = _same_names
) -> nn.Module:
    """The network `build` makes with the weights of `path` (`names` maps the file's tensor
    names to the network's), kept while the file is unchanged; a file that does not fit is a
    ValueError naming it and `what` it should be."""
    return _loaded(build, path, path.stat().st_mtime, what, names)


@functools.lru_cache(maxsize=4)
def _loaded(build, path: Path, stamp: float, what: str, names: StateNames) -> nn.Module:
    model = build()
    try:
        model.load_state_dict(names(model, load_file(str(path))))
    except (SafetensorError, RuntimeError, OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0]
        raise ValueError(f"module: {path.name} is not {what} ({detail})") from None
    return model.eval().to(device())


@torch.no_grad()
def line_drawing(image: np.ndarray, weights: Path) -> np.ndarray:
    """White lines on black (what lineart ControlNets read) of an RGB uint8 picture."""
    model = load_network(LineGenerator, weights, "a lineart annotator")
    x = torch.from_numpy(image).float().div(255).permute(2, 0, 1)[None].to(device())
    lines = (model(x)[0, 0] * 255).clamp(0, 255).byte().cpu().numpy()
    return 255 - lines
