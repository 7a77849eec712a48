"""Hires fix: requested sizes, the same seed, latent / Lanczos / ESRGAN-family upscalers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.diffusion.generate import Engine
from engine.diffusion.params import from_request
from tests.fakes.models import write_tiny_esrgan


def run(engine, **request):
    params = from_request(request, engine.config.generation, engine.config.limits)
    return engine.txt2img(params)


def test_latent_hires_doubles_the_size_and_keeps_the_seed(engine):
    low = run(engine, prompt="a cat", seed=9)
    high = run(engine, prompt="a cat", seed=9, enable_hr=True, hr_scale=2)
    assert high.images[0].size == (128, 128)
    assert high.seeds == low.seeds == [9]
    line = high.infotexts[0].splitlines()[-1]
    assert "Size: 64x64" in line  # WebUI reports the first-pass size
    assert "Denoising strength: 0.45, Hires upscale: 2, Hires upscaler: Latent" in line


def test_target_size_and_second_pass_steps_with_lanczos(engine):
    reports = []
    params = from_request(
        {
            "prompt": "a cat",
            "seed": 9,
            "enable_hr": True,
            "hr_upscaler": "Lanczos",
            "hr_resize_x": 96,
            "hr_resize_y": 128,
            "hr_second_pass_steps": 3,
            "denoising_strength": 0.6,
        },
        engine.config.generation,
        engine.config.limits,
    )
    result = engine.txt2img(params, progress=lambda *r: reports.append(r))
    assert result.images[0].size == (96, 128)
    assert reports[-1] == ("hires", 7, 7)  # 4 first-pass steps + exactly 3 hires steps
    assert [r[0] for r in reports].count("hires") == 3
    assert "Hires resize: 96x128, Hires steps: 3, Hires upscaler: Lanczos" in result.infotexts[0]


def test_esrgan_model_from_the_esrgan_folder(tmp_path, engine_config):
    import dataclasses

    config = dataclasses.replace(engine_config, data_dir=tmp_path)
    write_tiny_esrgan(config.upscalers_dir / "4x-tiny.safetensors")
    esrgan_engine = Engine(config)
    result = run(esrgan_engine, prompt="a cat", seed=2, enable_hr=True, hr_upscaler="4x-tiny")
    assert result.images[0].size == (128, 128)
    assert "Hires upscaler: 4x-tiny" in result.infotexts[0]
    plain = run(esrgan_engine, prompt="a cat", seed=2, enable_hr=True, hr_upscaler="Lanczos")
    assert not np.array_equal(np.asarray(result.images[0]), np.asarray(plain.images[0]))


def test_unknown_upscaler_lists_the_available_ones(engine):
    with pytest.raises(ValueError, match=r"hr_upscaler: 'Magic' is not available.*Lanczos"):
        run(engine, prompt="a cat", enable_hr=True, hr_upscaler="Magic")


def test_hires_at_denoising_zero_is_the_upscaled_first_pass(engine):
    """WebUI accepts denoising 0 with hires fix: the picture is upscaled, not sampled again."""
    plain = run(engine, prompt="a cat", seed=9)
    upscaled = run(
        engine, prompt="a cat", seed=9, enable_hr=True, hr_upscaler="Lanczos", denoising_strength=0
    )
    assert upscaled.images[0].size == (128, 128)
    expected = plain.images[0].resize((128, 128), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(upscaled.images[0]), np.asarray(expected))


def test_a_model_upscaler_works_in_tiles_that_blend_into_the_whole_picture(tmp_path):
    """Large pictures go through an ESRGAN-family model in tiles (WebUI's ESRGAN_tile): the
    same size as in one piece, and the same picture up to the seams' blending."""
    from engine.diffusion.hires import upscale_with_model

    model = write_tiny_esrgan(tmp_path / "4x-tiny.safetensors")
    rng = np.random.default_rng(1)
    smooth = rng.integers(0, 255, (10, 16, 3)).astype(np.uint8)
    picture = Image.fromarray(smooth).resize((64, 40), Image.Resampling.BICUBIC)
    (whole,) = upscale_with_model([picture], model)  # smaller than a tile: one piece
    (tiled,) = upscale_with_model([picture], model, tile=24, overlap=8)
    assert whole.size == tiled.size == (256, 160)
    difference = np.abs(np.asarray(whole).astype(int) - np.asarray(tiled).astype(int))
    assert difference.mean() < 0.5 and difference.max() <= 8
