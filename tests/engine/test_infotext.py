"""WebUI infotext: the exact format, our parser, and an independent reader from PyPI."""

from __future__ import annotations

from io import BytesIO

from PIL import Image

from engine.diffusion import infotext
from engine.diffusion.params import from_request


def test_format_matches_webui_byte_for_byte():
    text = infotext.build(
        "dadaknight, a rider in the snow, (christmas:1.2), <lora:dada_v3:0.8>",
        "lowres, watermark",
        {
            "Steps": 25,
            "Sampler": "DPM++ 2M Karras",
            "CFG scale": 7.0,
            "Seed": 1234,
            "Size": "512x768",
            "Model hash": "6ce0161689",
            "Model": "revAnimated_v122",
            "VAE": None,
            "Denoising strength": 0.45,
            "Clip skip": 2,
            "Hires upscale": 2.0,
            "Hires upscaler": "Latent",
            "Lora hashes": "dada_v3: 1a2b3c4d5e6f",
            "Version": "posterbot 0.1.0",
        },
    )
    assert text == (
        "dadaknight, a rider in the snow, (christmas:1.2), <lora:dada_v3:0.8>\n"
        "Negative prompt: lowres, watermark\n"
        "Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
        "Model hash: 6ce0161689, Model: revAnimated_v122, Denoising strength: 0.45, Clip skip: 2, "
        'Hires upscale: 2, Hires upscaler: Latent, Lora hashes: "dada_v3: 1a2b3c4d5e6f", '
        "Version: posterbot 0.1.0"
    )


def test_empty_negative_prompt_line_is_left_out():
    text = infotext.build("a cat", "", {"Steps": 4, "Sampler": "Euler", "Seed": 1})
    assert text == "a cat\nSteps: 4, Sampler: Euler, Seed: 1"


def test_round_trip_through_our_parser(engine):
    params = from_request(
        {
            "prompt": "a cat,\nsecond line",
            "negative_prompt": "ugly",
            "seed": 77,
            "clip_skip": 2,
        },
        engine.config.generation,
        engine.config.limits,
    )
    result = engine.txt2img(params)
    parsed = infotext.parse(infotext.read_png(result.png(0)))
    assert parsed["Prompt"] == "a cat,\nsecond line"
    assert parsed["Negative prompt"] == "ugly"
    assert parsed["Seed"] == "77" and parsed["Steps"] == "4" and parsed["Sampler"] == "Euler a"
    assert parsed["Size"] == "64x64" and parsed["Clip skip"] == "2"
    assert parsed["Model hash"] == engine.model_hash and len(engine.model_hash) == 10


def test_independent_webui_metadata_reader_reads_our_png(engine):
    from sd_parsers import ParserManager

    params = from_request(
        {"prompt": "dadaknight, a rider", "negative_prompt": "lowres", "seed": 5, "steps": 3},
        engine.config.generation,
        engine.config.limits,
    )
    png = engine.txt2img(params).png(0)
    info = ParserManager().parse(Image.open(BytesIO(png)))
    assert info is not None and info.generator.name == "AUTOMATIC1111"
    sampler = info.samplers[0]
    assert sampler.name == "Euler a"
    assert sampler.parameters["seed"] == "5" and sampler.parameters["steps"] == "3"
    assert sampler.prompts[0].value == "dadaknight, a rider"
    assert sampler.negative_prompts[0].value == "lowres"
    assert sampler.model.hash == engine.model_hash
