"""A synthetic mascot dataset (the article's three kinds of images) and a config to train on."""

from __future__ import annotations

import dataclasses
import io
import random
import zipfile
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from posterbot.config import Config, IPConfig

TRIGGER = "dadaknight"
MASCOT = (220, 30, 30)  # a red round mascot with a yellow hat
SKY, GRASS = (110, 170, 230), (60, 150, 60)


def draw_mascot(draw: ImageDraw.ImageDraw, x: int, y: int, size: int) -> None:
    draw.ellipse((x, y, x + size, y + size), fill=MASCOT)
    draw.rectangle((x + size // 4, y - size // 4, x + 3 * size // 4, y), fill=(240, 200, 0))
    eye = max(1, size // 8)
    for ex in (x + size // 3, x + 2 * size // 3):
        draw.ellipse((ex - eye, y + size // 3, ex + eye, y + size // 3 + 2 * eye), fill=(0, 0, 0))


def scene(size: tuple[int, int], rng: random.Random) -> Image.Image:
    image = Image.new("RGB", size, SKY)
    draw = ImageDraw.Draw(image)
    horizon = int(size[1] * rng.uniform(0.5, 0.7))
    draw.rectangle((0, horizon, size[0], size[1]), fill=GRASS)
    sun = rng.randint(0, size[0] - 12)
    draw.ellipse((sun, 4, sun + 10, 14), fill=(250, 240, 180))
    return image


def mascot_images(count: int = 2, size: tuple[int, int] = (64, 64), seed: int = 0):
    """(stem, image, caption) for each kind: on white, in a scene, scene only."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        white = Image.new("RGB", size, (255, 255, 255))
        s = rng.randint(size[0] // 2, size[0] * 3 // 4)
        draw_mascot(ImageDraw.Draw(white), rng.randint(2, size[0] - s - 2), size[1] - s - 2, s)
        out.append((f"white{i}", white, f"{TRIGGER}, solo, full body, white background"))
        inside = scene(size, rng)
        s = rng.randint(size[0] // 3, size[0] // 2)
        draw_mascot(ImageDraw.Draw(inside), rng.randint(2, size[0] - s - 2), size[1] - s - 4, s)
        out.append((f"scene_ip{i}", inside, f"{TRIGGER}, outdoors, grass, blue sky"))
        out.append((f"scene{i}", scene(size, rng), "outdoors, grass, blue sky, no humans"))
    return out


def mascot_zip(extra: list[tuple[str, bytes]] = ()) -> bytes:
    """The synthetic mascot set (PNG + .txt pairs) as a zip, plus `extra` members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for stem, image, caption in mascot_images(1):
            png = io.BytesIO()
            image.save(png, format="PNG")
            archive.writestr(f"{stem}.png", png.getvalue())
            archive.writestr(f"{stem}.txt", caption)
        for name, data in extra:
            archive.writestr(name, data)
    return buffer.getvalue()


def write_dataset(folder: Path, count: int = 2, size=(64, 64), captions: bool = True) -> Path:
    """A loose folder of PNG + .txt pairs, as a designer would prepare it."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, image, caption in mascot_images(count, size):
        image.save(folder / f"{stem}.png")
        if captions:
            (folder / f"{stem}.txt").write_text(caption, encoding="utf-8")
    return folder


def config_for(engine_config: Config, data_dir: Path) -> Config:
    """The tiny model, `data_dir`, one IP whose posters use `dada_lora`."""
    ip = IPConfig(name="dada", trigger=TRIGGER, lora="dada_lora", lora_weight=1.0)
    return dataclasses.replace(engine_config, data_dir=data_dir, ips=[ip])


@pytest.fixture
def training_config(engine_config, tmp_path) -> Config:
    return config_for(engine_config, tmp_path / "data")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread: on a shared 2-core machine, 2 threads spin against other processes
    and run the tiny model ~10x slower. Restored after each module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Short runs for CPU tests: 64 px, rank 4, a learning rate high enough to move in a few steps.
QUICK = {
    "ip": "dada",
    "dataset": "dada",
    "resolution": 64,
    "min_bucket_reso": 64,
    "max_bucket_reso": 128,
    "network_dim": 4,
    "network_alpha": 4,
    "unet_lr": 3e-3,
    "text_encoder_lr": 1e-4,
    "mixed_precision": "no",
    "repeats": 2,
    "epochs": 2,
    "batch_size": 2,
    "sample_steps": 4,
    "lr_scheduler": "constant",
    "conv_dim": 4,
    "conv_alpha": 4,
}


@pytest.fixture(scope="session")
def trained(engine_config, tmp_path_factory):
    """One short real training run (3 epochs on the synthetic set), shared by the tests that
    look at its outputs: (config, result, progress calls)."""
    import torch

    from engine.training.intake import import_dataset
    from engine.training.trainer import run_training

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = config_for(engine_config, tmp_path_factory.mktemp("trained"))
    raw = write_dataset(tmp_path_factory.mktemp("raw"))
    import_dataset(raw, "dada", config, trigger=TRIGGER)
    seen: list[tuple] = []
    params = dict(QUICK, epochs=3, repeats=4, sample_every_n_epochs=3)
    result = run_training(config, params, progress=lambda *args: seen.append(args))
    torch.set_num_threads(threads)
    return config, result, seen


@pytest.fixture(scope="session")
def trained_engine(trained):
    from engine.diffusion.generate import Engine

    return Engine(trained[0])
