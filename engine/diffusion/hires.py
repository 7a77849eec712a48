"""Hires fix upscalers: in latent space (WebUI's "Latent" family) or on decoded images
(Lanczos, Nearest, or an ESRGAN-family model file from models/ESRGAN loaded with spandrel).

torch, numpy and spandrel are imported inside the functions that upscale: the service lists
upscaler names (`/sdapi/v1/upscalers`) from this module and must not load torch to do it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    import torch

# WebUI's latent upscalers: name → (interpolation mode, antialias)
LATENT_UPSCALERS = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
IMAGE_UPSCALERS = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}


def is_latent(name: str) -> bool:
    return name in LATENT_UPSCALERS


def upscaler_names(model_files: dict[str, Path], latent: bool = True) -> list[str]:
    """Every upscaler's name; `latent=False` leaves out those that work only inside a
    generation (WebUI's Extras tab lists the rest)."""
    return [*(LATENT_UPSCALERS if latent else ()), *IMAGE_UPSCALERS, *model_files]


def check_upscaler(
    name: str, model_files: dict[str, Path], field: str = "hr_upscaler", latent: bool = True
) -> None:
    if name not in upscaler_names(model_files, latent):
        valid = ", ".join(upscaler_names(model_files, latent))
        raise ValueError(f"{field}: {name!r} is not available; valid upscalers: {valid}")


def upscale_latents(latents: torch.Tensor, name: str, width: int, height: int, factor: int):
    import torch.nn.functional as F

    mode, antialias = LATENT_UPSCALERS[name]
    size = (height // factor, width // factor)
    return F.interpolate(latents, size=size, mode=mode, antialias=antialias)


@lru_cache(maxsize=2)
def _load_model(path: str, device: str, field: str):
    import spandrel

    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path)
    except Exception as exc:  # an untrusted file: whatever went wrong, it is no model we load
        raise ValueError(f"{field}: {Path(path).name} could not be loaded ({exc})") from None
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ValueError(f"{field}: {Path(path).name} is not an image upscaler model")
    return descriptor.to(device).eval()


def upscale_images(
    images: list[Image.Image],
    name: str,
    width: int,
    height: int,
    model_files: dict[str, Path],
    field: str = "hr_upscaler",
) -> list[Image.Image]:
    """Resize decoded images to width×height with `name` (a PIL filter or a model file)."""
    if name in IMAGE_UPSCALERS:
        return [image.resize((width, height), IMAGE_UPSCALERS[name]) for image in images]
    return [
        # The model scales by its own factor (e.g. 4×); WebUI then resizes to the target size.
        image.resize((width, height), Image.Resampling.LANCZOS)
        for image in upscale_with_model(images, model_files[name], field)
    ]


ESRGAN_TILE = 192  # WebUI's ESRGAN_tile: pixels per side a model upscales at once
ESRGAN_TILE_OVERLAP = 8  # WebUI's ESRGAN_tile_overlap


def upscale_with_model(
    images: list[Image.Image],
    path: Path,
    field: str = "hr_upscaler",
    tile: int = ESRGAN_TILE,
    overlap: int = ESRGAN_TILE_OVERLAP,
) -> list[Image.Image]:
    """Each image through an ESRGAN-family model, at the model's own scale, in tiles of `tile`
    pixels blended across their overlaps (as WebUI does), so a large picture does not need the
    whole activation memory at once."""
    import torch

    from engine.diffusion.img2img import blend_tiles, tile_origins

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _load_model(str(path), device, field)
    upscaled = []
    with torch.no_grad():
        for image in images:
            image = image.convert("RGB")
            width, height = image.size
            if width <= tile and height <= tile:
                upscaled.append(_through(model, image, device))
                continue
            tiles = []
            for y in tile_origins(height, tile, overlap):
                for x in tile_origins(width, tile, overlap):
                    crop = image.crop((x, y, min(x + tile, width), min(y + tile, height)))
                    out = _through(model, crop, device)
                    tiles.append(
                        (out, (x * out.width // crop.width, y * out.height // crop.height))
                    )
            scale = tiles[0][0].width // min(tile, width)
            upscaled.append(blend_tiles((width * scale, height * scale), tiles, overlap * scale))
    return upscaled


def _through(model, image: Image.Image, device: str) -> Image.Image:
    import numpy as np
    import torch

    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
    output = model(pixels.permute(2, 0, 1).unsqueeze(0).to(device)).clamp(0, 1)
    return Image.fromarray(
        (output[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    )
