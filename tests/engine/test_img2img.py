"""img2img and inpainting on the tiny model: strength, seeds, masks, resize modes, infotext."""

from __future__ import annotations

import base64
import hashlib
from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from engine.diffusion import img2img, infotext
from engine.diffusion.params import from_request
from engine.service.inputs import store_picture
from posterbot.errors import Refusal


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


def b64(image: Image.Image) -> str:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def picture(colour=(200, 40, 40), size=(64, 64)) -> Image.Image:
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((10, 10, 50, 50), fill=(30, 90, 220))
    return image


def mask_of(box: tuple[int, int, int, int]) -> Image.Image:
    """A 64x64 mask, white (repaint) inside `box`."""
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def stored(engine, image: Image.Image, mode: str = "RGB") -> str:
    return store_picture(engine.config, b64(image), "init_images[0]", mode)


def run(engine, **request):
    params = from_request(request, engine.config.generation, engine.config.limits)
    return engine.txt2img(params)


def test_strength_zero_gives_the_picture_back_through_the_vae(engine):
    init = picture()
    result = run(
        engine, prompt="x", seed=1, init_images=[stored(engine, init)], denoising_strength=0
    )
    round_trip = engine.decode(engine.encode([init], img2img.JUST_RESIZE, (64, 64)))[0]
    assert result.images[0].size == (64, 64)
    assert np.array_equal(pixels(result.images[0]), pixels(round_trip))


def test_strength_one_all_but_ignores_the_picture(engine):
    def at(init, seed):
        ref = stored(engine, init)
        return pixels(
            run(engine, prompt="x", seed=seed, init_images=[ref], denoising_strength=1).images[0]
        )

    red, green = picture((220, 30, 30)), picture((30, 220, 30))
    between_pictures = np.abs(at(red, 5) - at(green, 5)).mean()
    between_seeds = np.abs(at(red, 5) - at(red, 6)).mean()
    assert between_pictures < 0.3 * between_seeds


def test_a_middle_strength_keeps_more_of_the_picture_than_a_high_one(engine):
    init = picture()
    ref = stored(engine, init)
    round_trip = pixels(engine.decode(engine.encode([init], 0, (64, 64)))[0])
    low = run(engine, prompt="x", seed=3, init_images=[ref], denoising_strength=0.3, steps=10)
    high = run(engine, prompt="x", seed=3, init_images=[ref], denoising_strength=0.9, steps=10)
    assert (
        np.abs(pixels(low.images[0]) - round_trip).mean()
        < np.abs(pixels(high.images[0]) - round_trip).mean()
    )


def test_same_seed_same_pixels_and_batch_seeds_as_txt2img(engine):
    ref = stored(engine, picture())
    request = {"prompt": "x", "init_images": [ref], "denoising_strength": 0.6, "steps": 5}
    batch = run(engine, **request, seed=40, batch_size=2)
    assert batch.seeds == [40, 41]
    for i in range(2):
        single = run(engine, **request, seed=40 + i)
        assert np.abs(pixels(batch.images[i]) - pixels(single.images[0])).max() <= 1
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[1]))


def test_infotext_names_the_strength_and_the_init_picture_as_webui_does(engine):
    init = picture()
    result = run(
        engine, prompt="x", seed=2, init_images=[stored(engine, init)], denoising_strength=0.5
    )
    parsed = infotext.parse(infotext.read_png(result.png(0)))
    assert parsed["Denoising strength"] == "0.5"
    assert parsed["Init image hash"] == hashlib.md5(init.tobytes()).hexdigest()
    assert result.info()["denoising_strength"] == 0.5


def test_inpainting_leaves_everything_outside_the_blurred_mask_as_it_was(engine):
    init = picture()
    mask = mask_of((20, 20, 43, 43))
    ref, mask_ref = stored(engine, init), stored(engine, mask, "RGBA")
    for full_res in (False, True):
        result = run(
            engine, prompt="x", seed=9, init_images=[ref], mask=mask_ref, mask_blur=2,
            denoising_strength=0.9, inpaint_full_res=full_res, inpaint_full_res_padding=4,
        )  # fmt: skip
        out, before = pixels(result.images[0]), pixels(init)
        outside = np.ones((64, 64), bool)
        outside[14:50, 14:50] = False  # the mask grown by more than its blur
        assert np.array_equal(out[outside], before[outside])
        assert np.abs(out[24:40, 24:40] - before[24:40, 24:40]).mean() > 5  # repainted inside
        parsed = infotext.parse(infotext.read_png(result.png(0)))
        assert parsed["Mask blur"] == "2"
        assert ("Inpaint area" in parsed) == full_res


def test_an_inverted_mask_repaints_the_outside(engine):
    init = picture()
    mask = mask_of((16, 16, 47, 47))
    result = run(
        engine, prompt="x", seed=9, init_images=[stored(engine, init)], denoising_strength=0.9,
        mask=stored(engine, mask, "RGBA"), mask_blur=0, inpainting_mask_invert=True,
        inpaint_full_res=False,
    )  # fmt: skip
    out, before = pixels(result.images[0]), pixels(init)
    assert np.array_equal(out[16:48, 16:48], before[16:48, 16:48])
    assert np.abs(out[:8] - before[:8]).mean() > 5


@pytest.mark.parametrize("fill", [0, 2, 3])
def test_every_masked_content_mode_runs_and_keeps_the_outside(engine, fill):
    init = picture()
    mask = mask_of((24, 24, 40, 40))
    result = run(
        engine, prompt="x", seed=4, init_images=[stored(engine, init)], denoising_strength=0.8,
        mask=stored(engine, mask, "RGBA"), mask_blur=0, inpainting_fill=fill,
        inpaint_full_res=False,
    )  # fmt: skip
    assert np.array_equal(pixels(result.images[0])[:20], pixels(init)[:20])
    assert (
        infotext.parse(infotext.read_png(result.png(0)))["Masked content"]
        == (img2img.MASKED_CONTENT[fill])
    )


def test_a_mask_with_nothing_white_is_refused(engine):
    black = stored(engine, Image.new("L", (64, 64), 0), "RGBA")
    with pytest.raises(Refusal, match="mask"):
        run(engine, prompt="x", init_images=[stored(engine, picture())], mask=black)


def test_tiling_makes_the_picture_wrap_around(engine):
    plain = pixels(run(engine, prompt="x", seed=11).images[0])
    tiled = run(engine, prompt="x", seed=11, tiling=True)
    seam = pixels(tiled.images[0])
    assert not np.array_equal(plain, seam)
    assert infotext.parse(infotext.read_png(tiled.png(0)))["Tiling"] == "True"
    # the padding is back to zeros for the next request
    assert np.array_equal(plain, pixels(run(engine, prompt="x", seed=11).images[0]))


# -- the pure picture functions ---------------------------------------------------------------


def test_resize_modes_give_the_size_asked_for_as_webui_describes_them():
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 10, 100))  # a blue left edge
    for mode in img2img.RESIZE_MODES:
        assert img2img.resize_image(wide, mode, 64, 64).size == (64, 64)
    cropped = img2img.resize_image(wide, img2img.CROP_AND_RESIZE, 64, 64)
    assert cropped.getpixel((0, 32))[2] < 100  # the centre kept, the blue edge cut away
    filled = img2img.resize_image(wide, img2img.RESIZE_AND_FILL, 64, 64)
    assert filled.getpixel((32, 2)) == filled.getpixel((32, 17))  # bands stretch the edge row
    stretched = img2img.resize_image(wide, img2img.JUST_RESIZE, 64, 64)
    assert stretched.getpixel((1, 32))[2] > 200  # nothing cut


def test_fill_paints_the_masked_area_with_the_colours_around_it():
    image = Image.new("RGB", (64, 64), (0, 200, 0))
    image.paste((255, 255, 255), (20, 20, 44, 44))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (20, 20, 44, 44))
    filled = img2img.fill_masked(image, mask)
    r, g, b = filled.getpixel((32, 32))
    assert g > 150 and r < 60 and b < 60


def test_the_only_masked_region_has_the_output_aspect_and_stays_inside():
    box = img2img.region_around((30, 30, 40, 60), 8, 128, 64, (200, 100))
    left, top, right, bottom = box
    assert left >= 0 and top >= 0 and right <= 200 and bottom <= 100
    assert left <= 22 and right >= 48 and top <= 22 and bottom >= 68 - 8
    assert abs((right - left) / (bottom - top) - 2) < 0.1


def test_sd_upscale_redraws_the_enlarged_picture_tile_by_tile(engine):
    source = picture(size=(96, 64))
    result = run(
        engine, prompt="x", seed=8, init_images=[stored(engine, source)], denoising_strength=0.3,
        sd_upscale_scale=2.0, sd_upscale_overlap=16, sd_upscale_upscaler="Lanczos",
    )  # fmt: skip
    (image,) = result.images
    assert image.size == (192, 128)  # 3 × 2 tiles of 64x64 with overlaps
    enlarged = pixels(source.resize((192, 128), Image.Resampling.LANCZOS))
    assert np.abs(pixels(image) - enlarged).mean() > 1  # redrawn, not only resized
    again = run(
        engine, prompt="x", seed=8, init_images=[stored(engine, source)], denoising_strength=0.3,
        sd_upscale_scale=2.0, sd_upscale_overlap=16, sd_upscale_upscaler="Lanczos",
    )  # fmt: skip
    assert np.array_equal(pixels(again.images[0]), pixels(image))


def test_tiles_cover_the_side_and_blend_without_seams():
    assert img2img.tile_origins(192, 64, 16) == [0, 43, 85, 128]
    assert img2img.tile_origins(64, 64, 16) == [0]
    red, blue = Image.new("RGB", (64, 32), (255, 0, 0)), Image.new("RGB", (64, 32), (0, 0, 255))
    blended = img2img.blend_tiles((96, 32), [(red, (0, 0)), (blue, (32, 0))], 32)
    assert blended.getpixel((0, 10)) == (255, 0, 0) and blended.getpixel((95, 10)) == (0, 0, 255)
    row = [blended.getpixel((x, 10))[0] for x in range(32, 64)]
    assert row == sorted(row, reverse=True)  # red fades into blue across the overlap


def test_a_nine_channel_inpainting_checkpoint_inpaints_and_repaints_everything_without_a_mask(
    engine_config, tiny_model, tmp_path
):
    """An inpainting checkpoint (UNet with 9 input channels: latents, mask, masked picture) is
    used as such: inpainting keeps the outside (a variation too), img2img without a mask
    repaints everything."""
    import dataclasses

    from diffusers import DiffusionPipeline, UNet2DConditionModel

    from engine.diffusion.generate import Engine
    from posterbot.config import ModelsConfig

    pipe = DiffusionPipeline.from_pretrained(tiny_model)
    config = dict(pipe.unet.config) | {"in_channels": 9}
    torch.manual_seed(0)  # the inpainting UNet's random weights
    pipe.unet = UNet2DConditionModel.from_config(config)
    pipe.save_pretrained(tmp_path / "tiny-inpainting")
    settings = dataclasses.replace(
        engine_config,
        data_dir=tmp_path / "data",
        models=ModelsConfig(base=str(tmp_path / "tiny-inpainting")),
    )
    inpainter = Engine(settings)
    assert inpainter.pipe.unet.config.in_channels == 9
    init = picture()
    mask = mask_of((20, 20, 43, 43))
    ref = store_picture(settings, b64(init), "init_images[0]")
    mask_ref = store_picture(settings, b64(mask), "mask", "RGBA")
    masked = run(
        inpainter, prompt="x", seed=3, init_images=[ref], mask=mask_ref, mask_blur=0,
        denoising_strength=0.9, inpaint_full_res=False,
    )  # fmt: skip
    out, before = pixels(masked.images[0]), pixels(init)
    assert (
        np.array_equal(out[:16], before[:16])
        and np.abs(out[24:40, 24:40] - before[24:40, 24:40]).mean() > 5
    )
    whole = run(inpainter, prompt="x", seed=3, init_images=[ref], denoising_strength=0.9)
    assert np.abs(pixels(whole.images[0])[:16] - before[:16]).mean() > 5
    varied = run(
        inpainter, prompt="x", seed=3, init_images=[ref], mask=mask_ref, mask_blur=0,
        denoising_strength=0.9, inpaint_full_res=False, subseed=7, subseed_strength=0.5,
    )  # fmt: skip
    again = pixels(varied.images[0])
    assert np.array_equal(again[:16], before[:16])
    assert np.abs(again[24:40, 24:40] - out[24:40, 24:40]).mean() > 1  # a variation


def test_variation_seeds_work_with_a_picture_as_with_txt2img(engine):
    """The picture is noised with the seed's own noise, variation seed slerped in: strength 0
    of variation is the plain image, a variation differs, and a batch keeps WebUI's rule (the
    seed stays, the variation seed counts up)."""
    ref = stored(engine, picture())
    request = {"prompt": "x", "init_images": [ref], "denoising_strength": 0.7, "steps": 5}
    plain = run(engine, **request, seed=12)
    unvaried = run(engine, **request, seed=12, subseed=99, subseed_strength=0.0)
    varied = run(engine, **request, seed=12, subseed=99, subseed_strength=0.6)
    assert np.array_equal(pixels(plain.images[0]), pixels(unvaried.images[0]))
    assert np.abs(pixels(varied.images[0]) - pixels(plain.images[0])).mean() > 1
    batch = run(engine, **request, seed=12, subseed=99, subseed_strength=0.6, batch_size=2)
    assert batch.seeds == [12, 12] and batch.subseeds == [99, 100]
    assert np.abs(pixels(batch.images[0]) - pixels(varied.images[0])).max() <= 1
    assert "Variation seed strength: 0.6" in varied.infotexts[0]


def test_variation_seeds_work_with_inpainting_and_keep_the_outside(engine):
    """Inpainting starts from the seeds' own noise too: variation strength 0 is the plain
    inpainting, a variation repaints the masked area differently, image i of a batch is the
    single run with its own variation seed, and the outside stays the original's pixels."""
    init = picture()
    request = {
        "prompt": "x", "init_images": [stored(engine, init)], "steps": 4, "mask_blur": 0,
        "mask": stored(engine, mask_of((16, 16, 47, 47)), "RGBA"), "inpaint_full_res": False,
    }  # fmt: skip
    for strength in (0.7, 1.0):  # the picture noised, and pure noise
        plain = run(engine, **request, denoising_strength=strength, seed=12)
        unvaried = run(
            engine, **request, denoising_strength=strength, seed=12, subseed=99,
            subseed_strength=0.0,
        )  # fmt: skip
        varied = run(
            engine, **request, denoising_strength=strength, seed=12, subseed=99,
            subseed_strength=0.6,
        )  # fmt: skip
        assert np.array_equal(pixels(plain.images[0]), pixels(unvaried.images[0]))
        inside = (slice(20, 44), slice(20, 44))
        assert np.abs(pixels(varied.images[0])[inside] - pixels(plain.images[0])[inside]).mean() > 1
        outside = np.ones((64, 64), bool)
        outside[16:48, 16:48] = False
        assert np.array_equal(pixels(varied.images[0])[outside], pixels(init)[outside])
    batch = run(
        engine, **request, denoising_strength=0.7, seed=12, subseed=98, subseed_strength=0.6,
        batch_size=2,
    )  # fmt: skip
    assert batch.subseeds == [98, 99]
    second = run(
        engine, **request, denoising_strength=0.7, seed=12, subseed=99, subseed_strength=0.6
    )
    assert np.abs(pixels(batch.images[1]) - pixels(second.images[0])).max() <= 1
    plain_batch = run(engine, **request, denoising_strength=0.7, seed=12, batch_size=2)
    single = run(engine, **request, denoising_strength=0.7, seed=13)
    assert np.abs(pixels(plain_batch.images[1]) - pixels(single.images[0])).max() <= 1
