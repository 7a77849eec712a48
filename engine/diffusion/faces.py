"""Face restoration as WebUI does it: find the faces, align each to the restorer's 512×512 crop,
restore it with a GFPGAN or RestoreFormer model (files in models/GFPGAN, loaded by spandrel),
and paste it back with a feathered mask, blended by visibility (WebUI's `gfpgan_visibility`).

Faces are found offline: a YuNet ONNX file in models/GFPGAN (`*yunet*.onnx`, OpenCV's
`FaceDetectorYN`, which also gives the five landmarks that align the crop), else OpenCV's bundled
Haar cascade where this OpenCV still ships it (4.x; 5.x moved cascades to contrib). CodeFormer is
never loaded: its licence forbids commercial use.

The listing and the checks (`restorer_files`, `find_restorer`, `detector_file`) need no torch:
the service runs them at submit. torch, numpy, OpenCV and spandrel load inside the functions
that restore.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from engine.diffusion.registry import UPSCALER_SUFFIXES, check_weights_file
from posterbot.errors import Refusal

if TYPE_CHECKING:
    import numpy as np

FIELD = "face_restoration_model"
FAMILIES = ("GFPGAN", "RestoreFormer")  # spandrel architecture ids, also WebUI's names
REFUSED = "CodeFormer"  # its licence (S-Lab 1.0) forbids commercial use
FACE_SIZE = 512  # both families restore a 512×512 aligned face
# Where the eyes, nose tip and mouth corners of an aligned 512×512 face lie (FFHQ alignment, as
# GFPGAN and RestoreFormer were trained; the template facexlib uses)
FACE_TEMPLATE = (
    (192.98138, 239.94708),
    (318.90277, 240.19360),
    (256.63416, 314.01935),
    (201.26117, 371.41043),
    (313.08905, 371.15118),
)
BOX_CROP = 2.0  # without landmarks: the crop is this many face boxes wide (the template's share)
FEATHER = 0.1  # the mask fades in over this share of the face box, inside the box
MIN_FACE = 24  # pixels: smaller faces are too small to restore (and mostly false hits)
SCORE_THRESHOLD = 0.6  # YuNet's own default


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, width, height in the picture
    landmarks: tuple[tuple[float, float], ...] | None = None  # eyes, nose, mouth corners


# --- the models folder (no torch) -------------------------------------------------------------


def family_of(name: str) -> str | None:
    lowered = name.lower()
    return next((family for family in FAMILIES if family.lower() in lowered), None)


def restorer_files(folder: Path) -> dict[str, Path]:
    """Restorer name (file stem) → file: GFPGAN and RestoreFormer weights, told apart by name as
    WebUI does (the folder also holds facexlib's detection and parsing weights)."""
    if not folder.is_dir():
        return {}
    return {
        path.stem: path
        for path in sorted(folder.iterdir())
        if path.suffix in UPSCALER_SUFFIXES and family_of(path.stem) and path.is_file()
    }


def restorer_names(folder: Path) -> list[str]:
    """The families installed (what WebUI clients send as `face_restoration_model`)."""
    installed = {family_of(stem) for stem in restorer_files(folder)}
    return [family for family in FAMILIES if family in installed]


def find_restorer(name: str | None, folder: Path) -> Path:
    """The weights file for `name` (a family, newest file first, or a file stem; None = the first
    installed); a Refusal naming `face_restoration_model` otherwise."""
    if name is not None and not isinstance(name, str):
        raise Refusal(FIELD, f"must be a face restorer's name, not {name!r}")
    if name and REFUSED.lower() in name.lower():
        raise Refusal(
            FIELD,
            "CodeFormer is not supported: its licence forbids commercial use; use GFPGAN or "
            "RestoreFormer",
            "codeformer_refused",
        )
    files = restorer_files(folder)
    installed = {f: [p for stem, p in files.items() if family_of(stem) == f] for f in FAMILIES}
    if name in files:
        path = files[name]
    else:
        asked = [f for f in FAMILIES if (name or "").lower() == f.lower()]
        family = asked[0] if asked else None
        if not name:  # WebUI's default restorer is GFPGAN; else whichever is installed
            family = next((f for f in FAMILIES if installed[f]), None)
        if family is None or not installed[family]:
            known = ", ".join([*restorer_names(folder), *files]) or "none installed"
            raise Refusal(
                FIELD,
                f"{name or 'a face restorer'} is not in models/GFPGAN (available: {known})",
                "face_restorer_missing",
                name=name or "",
            )
        path = installed[family][-1]  # GFPGANv1.3, GFPGANv1.4: the newest sorts last
    check_weights_file(path, FIELD)
    return path


def detector_file(folder: Path) -> Path | None:
    """A YuNet face detector in the folder, if any."""
    found = sorted(folder.glob("*yunet*.onnx")) if folder.is_dir() else []
    return found[-1] if found else None


def check_detector(folder: Path) -> None:
    """Refuse face restoration on a host that has no way to find faces."""
    if detector_file(folder) is None and _haar_cascade() is None:
        raise Refusal(
            FIELD,
            "no face detector: put face_detection_yunet_2023mar.onnx (OpenCV's YuNet) in "
            "models/GFPGAN",
            "face_detector_missing",
        )


def _haar_cascade() -> str | None:
    import cv2

    if not hasattr(cv2, "CascadeClassifier"):
        return None
    path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
    return str(path) if path.is_file() else None


# --- finding faces ------------------------------------------------------------------------------


def detect_faces(image: Image.Image, detector: Path | None) -> list[Face]:
    """The faces in `image`: by the YuNet file `detector`, else by the Haar cascade."""
    import cv2
    import numpy as np

    bgr = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)
    if detector is not None:
        yunet = cv2.FaceDetectorYN.create(str(detector), "", image.size, SCORE_THRESHOLD)
        _, rows = yunet.detect(bgr)
        found = [
            Face(
                tuple(round(float(v)) for v in row[:4]),
                tuple((float(row[4 + 2 * i]), float(row[5 + 2 * i])) for i in range(5)),
            )
            for row in (rows if rows is not None else [])
        ]
    else:
        cascade = cv2.CascadeClassifier(_haar_cascade())
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        boxes = cascade.detectMultiScale(gray, 1.1, 5, minSize=(MIN_FACE, MIN_FACE))
        found = [Face(tuple(int(v) for v in box)) for box in boxes]
    return [face for face in (clip_box(face, image.size) for face in found) if face is not None]


def clip_box(face: Face, size: tuple[int, int]) -> Face | None:
    """The face with its box inside the picture; None when too little of it is left."""
    x, y, w, h = face.box
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(size[0], x + w), min(size[1], y + h)
    if x1 - x0 < MIN_FACE or y1 - y0 < MIN_FACE:
        return None
    return Face((x0, y0, x1 - x0, y1 - y0), face.landmarks)


# --- restoring ----------------------------------------------------------------------------------


def face_matrix(face: Face) -> np.ndarray:
    """The 2×3 affine map from the picture to the face's aligned 512×512 crop: fitted to the
    template by the landmarks (a similarity: no shear), else a square BOX_CROP boxes wide."""
    import cv2
    import numpy as np

    if face.landmarks is not None:
        source = np.array(face.landmarks, dtype=np.float32)
        matrix, _ = cv2.estimateAffinePartial2D(
            source, np.array(FACE_TEMPLATE, dtype=np.float32), method=cv2.LMEDS
        )
        if matrix is not None:
            return matrix
    x, y, w, h = face.box
    scale = FACE_SIZE / (BOX_CROP * max(w, h))
    centre_x, centre_y = x + w / 2, y + h / 2
    return np.array(
        [
            [scale, 0, FACE_SIZE / 2 - scale * centre_x],
            [0, scale, FACE_SIZE / 2 - scale * centre_y],
        ],
        dtype=np.float64,
    )


def feathered_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """1 inside the face box, fading to 0 at its edges over FEATHER of its size; 0 outside, so
    nothing outside a detected face changes."""
    import numpy as np

    width, height = size
    x, y, w, h = box
    feather = max(1.0, FEATHER * min(w, h))
    columns = np.arange(width) + 0.5
    lines = np.arange(height) + 0.5
    across = np.minimum(columns - x, x + w - columns) / feather
    down = np.minimum(lines - y, y + h - lines) / feather
    return np.clip(np.minimum(down[:, None], across[None, :]), 0, 1).astype(np.float32)


@lru_cache(maxsize=2)
def _load_restorer(path: str, device: str):
    import spandrel

    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path)
    except Exception as exc:  # an untrusted file: whatever it is, it is not a restorer we load
        raise Refusal(
            FIELD,
            f"{Path(path).name} could not be loaded as a face restoration model "
            f"({type(exc).__name__})",
            "model_unreadable",
            name=Path(path).name,
        ) from None
    if descriptor.architecture.id not in FAMILIES:
        raise Refusal(
            FIELD,
            f"{Path(path).name} is a {descriptor.architecture.name} model, not GFPGAN or "
            "RestoreFormer",
            "model_unreadable",
            name=Path(path).name,
        )
    return descriptor.to(device).eval()


def _restore_crop(descriptor, crop: np.ndarray, device: str) -> np.ndarray:
    """One aligned 512×512 RGB crop through the model (uint8 in, uint8 out)."""
    import numpy as np
    import torch

    pixels = torch.from_numpy(crop.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    pixels = pixels.to(device)
    with torch.no_grad():
        if descriptor.architecture.id == "GFPGAN":  # spandrel passes GFPGAN's [-1, 1] as is
            output = (descriptor(pixels * 2 - 1) + 1) / 2
        else:
            output = descriptor(pixels)
    output = output.clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return (output * 255).round().astype(np.uint8)


def restore_faces(
    images: list[Image.Image], model: Path, visibility: float = 1.0, detector: Path | None = None
) -> list[Image.Image]:
    """Each picture with its faces restored by the restorer file `model` (see `find_restorer`)
    and blended at `visibility` (0..1); faces found by the YuNet file `detector`, else the Haar
    cascade. A picture without faces comes back as it was."""
    import cv2
    import numpy as np
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    descriptor = _load_restorer(str(model), device)
    restored = []
    for image in images:
        # 1. find the faces
        faces = detect_faces(image, detector)
        pixels = np.asarray(image.convert("RGB")).astype(np.float32)
        for face in faces:
            # 2. align the face to the model's crop and restore it
            matrix = face_matrix(face)
            crop = cv2.warpAffine(
                pixels.astype(np.uint8),
                matrix,
                (FACE_SIZE, FACE_SIZE),
                borderMode=cv2.BORDER_REFLECT,
            )
            better = _restore_crop(descriptor, crop, device)
            # 3. back into the picture, inside the face box only, at the visibility asked for
            back = cv2.warpAffine(
                better, cv2.invertAffineTransform(matrix), image.size, flags=cv2.INTER_LANCZOS4
            )
            mask = feathered_mask(image.size, face.box)[..., None] * visibility
            pixels = pixels * (1 - mask) + back.astype(np.float32) * mask
        restored.append(Image.fromarray(pixels.round().clip(0, 255).astype(np.uint8)))
    return restored
