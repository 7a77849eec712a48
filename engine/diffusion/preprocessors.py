"""ControlNet preprocessors: a picture → the control map a ControlNet model reads.

Names, labels, sliders and defaults are the sd-webui-controlnet extension's, so its API clients
and their saved settings work unchanged (`threshold_a` / `threshold_b` are its slider 1 and 2).
Preprocessors listed in `WEIGHT_FREE` are OpenCV and numpy only: they run anywhere, the service's
`/controlnet/detect` included. The ones in `ANNOTATED` (lineart realistic/coarse, openpose body,
depth_anything) need annotator weights under `models/ControlNet/annotators/` (`.safetensors`
only) and say which file is missing otherwise; they run in a worker. No torch at import time.
openpose and depth_anything run at the processor resolution without the 64-pixel padding: their
networks pad (or resize) to their own strides.

The maps follow the extension's steps: the picture is scaled so its short side is the processor
resolution (edge-padded to a multiple of 64 while the detector runs, as the extension's
detectors expect), and the map is later fitted to the generation size by the unit's resize mode
(`fit_map`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.diffusion.single_file import read_header
from posterbot.errors import Refusal

RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")  # the extension's 0, 1, 2
PAD_MULTIPLE = 64  # detectors see sizes that divide by 64; the padding is cut off afterwards


@dataclass(frozen=True)
class Slider:
    """One of a preprocessor's settings as the extension's module_detail lists it."""

    label: str
    value: float
    minimum: float
    maximum: float
    step: float = 1.0
    visible: bool = True  # hidden sliders are not listed, but their range still applies

    def api_json(self) -> dict[str, float | str]:
        return {
            "name": self.label,
            "value": self.value,
            "min": self.minimum,
            "max": self.maximum,
            "step": self.step,
        }

    def pick(self, value: float) -> float:
        """The extension's rule: a value outside the slider's range (-1 = "default") means the
        default, so clients that always send their own defaults keep working."""
        return value if self.minimum <= value <= self.maximum else self.value


RESOLUTION = Slider("Resolution", 512, 64, 2048, 8)
# The extension's unused slider: any value outside 0..1 becomes 0.5, which its infotext shows.
HIDDEN = Slider("EMPTY_LABEL", 0.5, 0.0, 1.0, 0.01, visible=False)

# (picture RGB uint8 HxWx3, processor resolution, slider 1, slider 2, annotators folder) → map
Detector = Callable[[np.ndarray, int, float, float, Path], np.ndarray]


@dataclass(frozen=True)
class Preprocessor:
    name: str
    detect: Detector
    label: str = ""  # the extension's display name (`alias_names`), when not the name
    resolution: Slider = RESOLUTION
    slider_1: Slider = HIDDEN
    slider_2: Slider = HIDDEN
    priority: int = 0  # the extension's sorting_priority: higher is listed first
    files: tuple[str, ...] = ()  # annotator weights it needs, in models/ControlNet/annotators/

    @property
    def display_name(self) -> str:
        return self.label or self.name

    def detail(self) -> dict:
        """module_detail's entry: its visible sliders (`model_free` is the extension's flag for
        control types that need no ControlNet model, which none of these are)."""
        sliders = (self.resolution, self.slider_1, self.slider_2)
        return {"model_free": False, "sliders": [s.api_json() for s in sliders if s.visible]}

    def settings(
        self, processor_res: float, threshold_a: float, threshold_b: float
    ) -> tuple[float, float, float]:
        """The resolution and slider values it runs with (out of range → the defaults)."""
        return (
            self.resolution.pick(processor_res),
            self.slider_1.pick(threshold_a),
            self.slider_2.pick(threshold_b),
        )

    def installed(self, annotators: Path) -> bool:
        """Whether the annotator files it needs are there (weight-free ones always are)."""
        return all((annotators / name).is_file() for name in self.files)

    def check_files(self, annotators: Path, field: str = "module") -> None:
        """Refuse, naming the file, when an annotator file it needs is missing, or is no
        readable .safetensors (a renamed pickle: it could run code when loaded)."""
        for name in self.files:
            path = annotators / name
            if not path.is_file():
                raise Refusal(
                    field,
                    f"{self.name} needs models/ControlNet/annotators/{name}, which is missing",
                    "annotator_missing",
                    module=self.name,
                    file=name,
                )
            if path.suffix == ".safetensors":
                try:
                    read_header(path)
                except ValueError:
                    raise Refusal(
                        field,
                        f"models/ControlNet/annotators/{name} is not a readable .safetensors "
                        "file (a pickle renamed .safetensors is refused: it could run code)",
                        "annotator_damaged",
                        module=self.name,
                        file=name,
                    ) from None

    def run(
        self,
        picture: np.ndarray,
        annotators: Path,
        processor_res: float = -1,
        threshold_a: float = -1,
        threshold_b: float = -1,
    ) -> np.ndarray:
        """The control map of an RGB picture, HxWx3 uint8 at the processor resolution."""
        self.check_files(annotators)
        resolution, a, b = self.settings(processor_res, threshold_a, threshold_b)
        return as_rgb(self.detect(as_rgb(picture), int(resolution), a, b, annotators))


def as_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1 or HxWx3 uint8 → HxWx3 (a one-channel map repeated)."""
    if image.ndim == 2:
        image = image[:, :, None]
    return np.ascontiguousarray(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)


def scaled(picture: np.ndarray, resolution: int) -> np.ndarray:
    """The picture with its short side at `resolution` (area filter down, cubic up)."""
    height, width = picture.shape[:2]
    k = resolution / min(height, width)
    size = (round(width * k), round(height * k))
    if size == (width, height):
        return picture
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    return cv2.resize(picture, size, interpolation=interpolation)


def padded_run(picture: np.ndarray, resolution: int, detector: Callable) -> np.ndarray:
    """Run `detector` on the scaled picture edge-padded to multiples of 64; cut the pad off."""
    image = scaled(picture, resolution)
    height, width = image.shape[:2]
    pad_h, pad_w = -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
    result = detector(np.pad(image, [(0, pad_h), (0, pad_w), (0, 0)], mode="edge"))
    return result[:height, :width]


# -- weight-free detectors -------------------------------------------------------------------------


def _none(picture, resolution, a, b, annotators):
    return picture  # the picture already is a control map


def _canny(picture, resolution, low, high, annotators):
    return padded_run(picture, resolution, lambda image: cv2.Canny(image, int(low), int(high)))


def _invert(picture, resolution, a, b, annotators):
    return 255 - picture  # a dark sketch on white → the white-on-black lines ControlNets read


def _threshold(picture, resolution, level, b, annotators):
    def binarize(image: np.ndarray) -> np.ndarray:
        return np.where(image.min(axis=2) > level, 255, 0).astype(np.uint8)

    return padded_run(picture, resolution, binarize)


def _scribble_xdog(picture, resolution, level, b, annotators):
    """Difference of Gaussians: strokes of any colour on any background → white scribbles."""

    def xdog(image: np.ndarray) -> np.ndarray:
        fine = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 0.5)
        coarse = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 5.0)
        darkness = (coarse - fine).min(axis=2).clip(0, 255)  # a dark stroke: its blur is lighter
        return np.where(2 * darkness > level, 255, 0).astype(np.uint8)

    return padded_run(picture, resolution, xdog)


def _lineart_standard(picture, resolution, a, b, annotators):
    """Dark lines on a light background, normalised by their median strength."""

    def lines(image: np.ndarray) -> np.ndarray:
        x = image.astype(np.float32)
        strength = (cv2.GaussianBlur(x, (0, 0), 6.0) - x).min(axis=2).clip(0, 255)
        strong = strength[strength > 8]
        scale = max(16.0, float(np.median(strong))) if strong.size else 16.0
        return (strength / scale * 127).clip(0, 255).astype(np.uint8)

    return padded_run(picture, resolution, lines)


def _tile_resample(picture, resolution, rate, b, annotators):
    """The picture itself, optionally down-sampled (tile ControlNets add the detail back)."""
    if rate < 1.1:
        return picture
    height, width = picture.shape[:2]
    size = (int(width / rate), int(height / rate))
    return cv2.resize(picture, size, interpolation=cv2.INTER_AREA)


def _blur_gaussian(picture, resolution, sigma, b, annotators):
    return cv2.GaussianBlur(scaled(picture, resolution), (0, 0), float(sigma))


WEIGHT_FREE = [
    Preprocessor("none", _none, priority=10),
    Preprocessor(
        "canny",
        _canny,
        slider_1=Slider("Low Threshold", 100, 1, 255),
        slider_2=Slider("High Threshold", 200, 1, 255),
        priority=100,
    ),
    Preprocessor(
        "invert",
        _invert,
        label="invert (from white bg & black line)",
        resolution=HIDDEN,
        priority=20,
    ),
    Preprocessor("threshold", _threshold, slider_1=Slider("Binarization Threshold", 127, 0, 255)),
    Preprocessor("scribble_xdog", _scribble_xdog, slider_1=Slider("XDoG Threshold", 32, 1, 64)),
    Preprocessor(
        "lineart_standard",
        _lineart_standard,
        label="lineart_standard (from white bg & black line)",
        priority=100,
    ),
    Preprocessor(
        "tile_resample",
        _tile_resample,
        slider_1=Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01),
        priority=100,
    ),
    Preprocessor("blur_gaussian", _blur_gaussian, slider_1=Slider("Sigma", 9.0, 0.01, 64.0, 0.01)),
]


# -- detectors with annotator weights (torch: run in workers only) ---------------------------------


def _lineart(weights: str) -> Detector:
    def detect(picture, resolution, a, b, annotators):
        from engine.diffusion.annotators import line_drawing  # torch: workers only

        return padded_run(
            picture, resolution, lambda image: line_drawing(image, annotators / weights)
        )

    return detect


def _openpose(picture, resolution, a, b, annotators):
    from engine.diffusion.openpose import pose_map  # torch: workers only

    return pose_map(scaled(picture, resolution), annotators / OPENPOSE_FILE)


def _depth_anything(picture, resolution, a, b, annotators):
    from engine.diffusion.depth import depth_map  # torch: workers only

    return depth_map(scaled(picture, resolution), annotators / DEPTH_ANYTHING_FOLDER)


OPENPOSE_FILE = "body_pose_model.safetensors"  # the annotators' body_pose_model.pth, converted
DEPTH_ANYTHING_FOLDER = "depth-anything-small"  # LiheYoung/depth-anything-small-hf's layout
ANNOTATED = [
    Preprocessor(
        "lineart_realistic", _lineart("sk_model.safetensors"), files=("sk_model.safetensors",)
    ),
    Preprocessor(
        "lineart_coarse", _lineart("sk_model2.safetensors"), files=("sk_model2.safetensors",)
    ),
    Preprocessor("openpose", _openpose, files=(OPENPOSE_FILE,)),
    Preprocessor(
        "depth_anything",
        _depth_anything,
        files=(
            f"{DEPTH_ANYTHING_FOLDER}/config.json",
            f"{DEPTH_ANYTHING_FOLDER}/model.safetensors",
        ),
    ),
]

PREPROCESSORS = {p.name: p for p in WEIGHT_FREE + ANNOTATED}


def sorted_preprocessors() -> list[Preprocessor]:
    """The extension's order: `none` first, then by priority and display name, highest first."""
    rest = [p for p in PREPROCESSORS.values() if p.name != "none"]
    rest.sort(key=lambda p: (p.priority, p.display_name), reverse=True)
    return [PREPROCESSORS["none"], *rest]


def find_preprocessor(name: object, field: str = "module") -> Preprocessor:
    """A preprocessor by its name or display name (as the extension accepts either)."""
    if isinstance(name, str):
        wanted = name.strip()
        for preprocessor in PREPROCESSORS.values():
            if wanted in (preprocessor.name, preprocessor.label):
                return preprocessor
        if wanted.lower() == "none":
            return PREPROCESSORS["none"]
    known = ", ".join(p.name for p in sorted_preprocessors())
    raise Refusal(
        field, f"{name!r} is not a preprocessor (known: {known})", "module_unknown", module=name
    )


# -- fitting a map to the generation size ----------------------------------------------------------


def pixel_perfect_resolution(height: int, width: int, target: tuple[int, int], mode: str) -> int:
    """The processor resolution at which the map needs no rescaling for `target` (w, h)."""
    k_h, k_w = target[1] / height, target[0] / width
    k = min(k_h, k_w) if mode == "Resize and Fill" else max(k_h, k_w)
    return int(np.round(k * min(height, width)))


def distinct_colours(control: np.ndarray) -> np.ndarray:
    """The map's colours, each once. Packed into one integer per pixel: a 1-D unique is ~100×
    faster than numpy's unique over rows, which sorted every map of every job."""
    pixels = control.reshape(-1, control.shape[2]).astype(np.uint32)
    packed = np.zeros(len(pixels), np.uint32)
    for channel in range(pixels.shape[1]):
        packed = (packed << 8) | pixels[:, channel]
    return np.unique(packed)


def resized_map(control: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A control map at `size` (w, h). Few-colour maps (segmentation) keep exact colours; a
    black-and-white map (edges, scribbles) stays black and white."""
    if (control.shape[1], control.shape[0]) == size:
        return control
    colours = distinct_colours(control)
    smaller = size[0] * size[1] < control.shape[0] * control.shape[1]
    if 2 < len(colours) < 200:
        interpolation = cv2.INTER_NEAREST
    else:
        interpolation = cv2.INTER_AREA if smaller else cv2.INTER_CUBIC
    result = cv2.resize(control, size, interpolation=interpolation)
    if len(colours) == 2 and control.min() < 16 and control.max() > 240:
        grey = result.mean(axis=2).astype(np.uint8)
        _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        result = as_rgb(binary)
    return result


def fit_map(control: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """The map at the generation size by the unit's resize mode: stretched (Just Resize),
    scaled to cover and centre-cropped (Crop and Resize), or scaled to fit and centred on its
    border colour (Resize and Fill)."""
    if mode == "Just Resize":
        return resized_map(control, (width, height))
    old_h, old_w = control.shape[:2]
    k_h, k_w = height / old_h, width / old_w
    k = min(k_h, k_w) if mode == "Resize and Fill" else max(k_h, k_w)
    scaled_map = resized_map(control, (round(old_w * k), round(old_h * k)))
    new_h, new_w = scaled_map.shape[:2]
    if mode == "Resize and Fill":
        border = np.concatenate(
            [control[0, :, :], control[-1, :, :], control[:, 0, :], control[:, -1, :]]
        )
        canvas = np.tile(np.median(border, axis=0).astype(np.uint8), (height, width, 1))
        top, left = max(0, (height - new_h) // 2), max(0, (width - new_w) // 2)
        canvas[top : top + new_h, left : left + new_w] = scaled_map[:height, :width]
        return canvas
    top, left = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
    return np.ascontiguousarray(scaled_map[top : top + height, left : left + width])
