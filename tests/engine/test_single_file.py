"""A single-file `.safetensors` checkpoint, as WebUI keeps them, loads and draws like the folder."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from engine.diffusion.generate import Engine
from engine.diffusion.params import from_request
from tests.fakes.single_file import write_single_file


def test_single_file_checkpoint_in_the_models_folder_gives_the_same_image(
    tmp_path, tiny_model, engine, engine_config
):
    config = dataclasses.replace(engine_config, data_dir=tmp_path)
    checkpoint = config.checkpoints_dir / "tinyAnime_v1.safetensors"
    checkpoint.parent.mkdir(parents=True)
    write_single_file(tiny_model, checkpoint)
    models = dataclasses.replace(
        config.models, base="tinyAnime_v1", single_file_config=str(tiny_model)
    )
    single = Engine(dataclasses.replace(config, models=models))

    params = from_request({"prompt": "a cat", "seed": 8}, config.generation, config.limits)
    from_file = single.txt2img(params)
    from_folder = engine.txt2img(params)
    assert np.array_equal(np.asarray(from_file.images[0]), np.asarray(from_folder.images[0]))
    model_hash = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:10]
    assert f"Model hash: {model_hash}, Model: tinyAnime_v1," in from_file.infotexts[0]


def test_sdxl_is_told_from_the_files_without_loading(tmp_path, tiny_model):
    from safetensors.numpy import save_file

    from engine.diffusion.registry import ModelRef, is_sdxl
    from engine.diffusion.tiny import write_demo_model

    sd15_file = write_single_file(tiny_model, tmp_path / "sd15.safetensors")
    xl_keys = {"conditioner.embedders.1.model.ln_final.weight": np.zeros(4, np.float32)}
    save_file(xl_keys, tmp_path / "xl.safetensors")  # the key only SDXL checkpoints have
    xl_folder = write_demo_model(tmp_path / "tiny-xl", kind="sdxl")
    assert is_sdxl(ModelRef("a", str(tiny_model), "folder")) is False
    assert is_sdxl(ModelRef("b", str(xl_folder), "folder")) is True
    assert is_sdxl(ModelRef("c", str(sd15_file), "file")) is False
    assert is_sdxl(ModelRef("d", str(tmp_path / "xl.safetensors"), "file")) is True
    assert is_sdxl(ModelRef("e", "stabilityai/sdxl-turbo", "hub")) is None
