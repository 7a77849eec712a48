"""A single-file `.safetensors` checkpoint, as WebUI keeps them, loads and draws like the folder."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from engine.diffusion.generate import Engine
from engine.diffusion.params import from_request
from tests.fakes.single_file import write_single_file, write_vae_file


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


# --- offline configs chosen by the checkpoint's keys ------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any connection beyond 127.0.0.1 fails the test (a hub request would be one)."""
    import socket

    local = ("127.0.0.1", "::1", "localhost")
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect_locally(sock, address):
        assert address[0] in local, f"network use: {address}"
        return connect(sock, address)

    def resolve_locally(host, *args, **kwargs):
        assert host in local, f"network use: {host}"
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect_locally)
    monkeypatch.setattr(socket, "getaddrinfo", resolve_locally)


# The keys diffusers reads to tell the models apart, with tiny shapes where the shape matters.
UNET_KEY = "model.diffusion_model.out.2.weight"
V2_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
IN_KEY = "model.diffusion_model.input_blocks.0.0.weight"
XL_KEY = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
TELLING_KEYS = {
    "v1": {UNET_KEY: (1,), IN_KEY: (1, 4, 1, 1)},
    "inpainting": {UNET_KEY: (1,), IN_KEY: (1, 9, 1, 1)},
    "v2": {UNET_KEY: (1,), V2_KEY: (1, 1024)},
    "inpainting_v2": {IN_KEY: (1, 9, 1, 1), V2_KEY: (1, 1024)},
    "xl_base": {UNET_KEY: (1,), XL_KEY: (1,)},
}


def _header_file(path, shapes):
    from safetensors.numpy import save_file

    save_file({key: np.zeros(shape, np.float16) for key, shape in shapes.items()}, path)
    return path


def _config(folder, part):
    import json

    return json.loads((folder / part).read_text(encoding="utf-8"))


def test_each_model_type_gets_the_public_models_config_by_its_keys(tmp_path):
    from engine.diffusion import single_file

    expected = {  # (UNet in channels, cross attention width, prediction type) of the public model
        "v1": (4, 768, "epsilon"),
        "inpainting": (9, 768, "epsilon"),
        "v2": (4, 1024, "v_prediction"),
        "inpainting_v2": (9, 1024, "epsilon"),
        "xl_base": (4, 2048, "epsilon"),
    }
    for kind, shapes in TELLING_KEYS.items():
        path = _header_file(tmp_path / f"{kind}.safetensors", shapes)
        assert single_file.model_type(path, single_file.read_header(path)) == kind
        folder = single_file.config_folder(kind, tmp_path / "cache")
        unet = _config(folder, "unet/config.json")
        scheduler = _config(folder, "scheduler/scheduler_config.json")
        got = (unet["in_channels"], unet["cross_attention_dim"])
        got += (scheduler.get("prediction_type", "epsilon"),)
        assert got == expected[kind], kind
        assert (folder / "tokenizer" / "vocab.json").is_file()
    xl = single_file.config_folder("xl_base", tmp_path / "cache")
    assert _config(xl, "text_encoder_2/config.json")["hidden_size"] == 1280
    assert _config(xl, "vae/config.json")["scaling_factor"] == 0.13025


def test_sd2_base_is_told_by_the_yaml_beside_it_as_webui_does(tmp_path):
    from engine.diffusion import single_file

    v_model = _header_file(tmp_path / "sd21.safetensors", TELLING_KEYS["v2"])
    base = _header_file(tmp_path / "sd21-base.safetensors", TELLING_KEYS["v2"])
    bare = _header_file(tmp_path / "sd2.safetensors", TELLING_KEYS["v2"])
    v_model.with_suffix(".yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    base.with_suffix(".yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    kinds = [single_file.model_type(p, single_file.read_header(p)) for p in (v_model, base, bare)]
    assert kinds == ["v2", "v2_base", "v2"]  # no yaml: diffusers' default, stable-diffusion-2-1
    folder = single_file.config_folder("v2_base", tmp_path / "cache")
    assert _config(folder, "scheduler/scheduler_config.json")["prediction_type"] == "epsilon"
    assert _config(folder, "unet/config.json")["sample_size"] == 64  # 512 px


def test_checkpoints_that_are_not_base_models_are_refused_in_one_line(tmp_path):
    from engine.diffusion import single_file

    cases = {
        "no UNet keys": {"first_stage_model.decoder.conv_in.weight": (1,)},
        "SDXL refiner": {
            UNET_KEY: (1,),
            "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": (1,),
        },
        "'controlnet' checkpoint": {"control_model.time_embed.0.weight": (1,)},
    }
    for words, shapes in cases.items():
        path = _header_file(tmp_path / "foo.safetensors", shapes)
        with pytest.raises(ValueError, match=f"^model: foo.safetensors: .*{words}") as caught:
            single_file.model_type(path, single_file.read_header(path))
        assert "\n" not in str(caught.value)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"^model: junk\.safetensors: not a readable"):
        single_file.read_header(tmp_path / "junk.safetensors")


def test_materialised_tokenizers_give_clips_token_ids(tmp_path):
    from transformers import CLIPTokenizer

    from engine.diffusion import single_file

    for kind, pads in {"v1": ["<|endoftext|>"], "xl_base": ["<|endoftext|>", "!"]}.items():
        folder = single_file.config_folder(kind, tmp_path)
        for subfolder, pad in zip(["tokenizer", "tokenizer_2"], pads, strict=False):
            tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder=subfolder)
            ids = tokenizer("a photo of a cat").input_ids
            assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], (kind, subfolder)
            assert (len(tokenizer), tokenizer.pad_token, tokenizer.model_max_length) == (
                49408,
                pad,
                77,
            )
    again = single_file.config_folder("v1", tmp_path)  # written once, then reused
    assert again == tmp_path / "single-file-configs" / "v1"


def test_a_checkpoint_missing_a_part_is_refused_naming_it(tmp_path, tiny_model, engine_config):
    from safetensors.numpy import load_file, save_file

    whole = load_file(write_single_file(tiny_model, tmp_path / "whole.safetensors"))
    missing = {
        "has no text encoder: text_encoder": "cond_stage_model.",
        "has no VAE": "first_stage_model.",
    }
    for words, prefix in missing.items():
        path = tmp_path / "Stable-diffusion" / "foo.safetensors"
        path.parent.mkdir(exist_ok=True)
        save_file({k: v for k, v in whole.items() if not k.startswith(prefix)}, path)
        models = dataclasses.replace(
            engine_config.models, base=str(path), single_file_config=str(tiny_model)
        )
        config = dataclasses.replace(engine_config, data_dir=tmp_path, models=models)
        with pytest.raises(ValueError, match=f"^model: foo.safetensors: {words}"):
            Engine(config)


@pytest.mark.slow
def test_a_real_size_sd15_single_file_loads_offline_with_no_settings(
    tmp_path, engine_config, no_network
):
    """The architecture of stable-diffusion-v1-5 (random weights, fp16: ~2 GB) as a WebUI file:
    it loads from the shipped configs alone and draws what its diffusers folder draws."""
    import gc
    import shutil

    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from engine.diffusion import fetch, single_file

    configs = single_file.config_folder("v1", tmp_path / "configs")
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(_config(configs, "unet/config.json"))
    vae = AutoencoderKL.from_config(_config(configs, "vae/config.json"))
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(configs / "text_encoder"))
    pipe = StableDiffusionPipeline(
        vae=vae.half(),
        text_encoder=text_encoder.half(),
        tokenizer=CLIPTokenizer.from_pretrained(configs / "tokenizer"),
        unet=unet.half(),
        scheduler=PNDMScheduler.from_config(_config(configs, "scheduler/scheduler_config.json")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = tmp_path / "sd15"
    pipe.save_pretrained(folder, safe_serialization=True)
    # As the public folder has it: save_pretrained would write every default (timestep_spacing
    # too), and samplers built from the config keep only what the model's config names.
    shutil.copyfile(
        configs / "scheduler/scheduler_config.json", folder / "scheduler/scheduler_config.json"
    )
    del pipe, unet, vae, text_encoder
    config = dataclasses.replace(engine_config, data_dir=tmp_path / "data")
    config.checkpoints_dir.mkdir(parents=True)
    config.vae_dir.mkdir(parents=True)
    checkpoint = write_single_file(folder, config.checkpoints_dir / "sd15-random.safetensors")

    params = from_request(
        {"prompt": "a photo of a cat", "seed": 3, "steps": 2, "width": 64, "height": 64},
        config.generation,
        config.limits,
    )
    with_folder = dataclasses.replace(config.models, base=str(folder))
    expected = np.asarray(
        Engine(dataclasses.replace(config, models=with_folder)).txt2img(params).images[0]
    )
    gc.collect()
    with_file = dataclasses.replace(config.models, base=checkpoint.stem, single_file_config="")
    got = np.asarray(
        Engine(dataclasses.replace(config, models=with_file)).txt2img(params).images[0]
    )
    assert np.array_equal(got, expected)
    assert (config.data_dir / "cache" / "single-file-configs" / "v1" / "unet").is_dir()
    gc.collect()
    # a WebUI VAE file ([models] vae) loads offline too, with the SD 1.x VAE config
    vae_file = write_vae_file(folder / "vae", config.vae_dir / "vae-random.safetensors")
    vae = single_file.load_vae(vae_file, config.data_dir / "cache", torch.float32, sdxl=False)
    expected_vae = AutoencoderKL.from_pretrained(folder / "vae", dtype=torch.float32).state_dict()
    assert all(torch.equal(t, expected_vae[k]) for k, t in vae.state_dict().items())
    del vae, expected_vae
    # `posterbot models fetch` converts a fetched checkpoint once to a folder beside it
    converted = fetch.convert_checkpoint(checkpoint, config.data_dir / "cache")
    assert converted == checkpoint.with_suffix("")
    with_converted = dataclasses.replace(config.models, base=converted.name)
    drawn = Engine(dataclasses.replace(config, models=with_converted)).txt2img(params)
    assert np.array_equal(np.asarray(drawn.images[0]), expected)  # the folder draws alike
    assert _config(converted, "unet/config.json")["cross_attention_dim"] == 768
    weights = converted / "unet" / "diffusion_pytorch_model.safetensors"
    assert single_file.read_header(weights)["conv_in.weight"].dtype == "F16"  # kept fp16


def test_a_checkpoint_that_does_not_fit_its_config_names_the_setting(
    tmp_path, tiny_model, no_network
):
    """The tiny model's sizes are not SD 1.5's: one line that says which setting to use, and no
    request to a hub."""
    import torch

    from engine.diffusion import single_file

    path = write_single_file(tiny_model, tmp_path / "odd.safetensors")
    with pytest.raises(ValueError) as caught:
        single_file.load(path, tmp_path / "cache", torch.float32)
    text = str(caught.value)
    assert text.startswith("model: odd.safetensors: does not fit the Stable Diffusion 1.x config")
    assert "[models] single_file_config" in text and "\n" not in text


def test_a_vae_setting_that_names_no_vae_is_refused(tmp_path):
    import torch

    from engine.diffusion import single_file

    path = _header_file(tmp_path / "unet-only.safetensors", TELLING_KEYS["v1"])
    with pytest.raises(ValueError, match=r"^models\.vae: unet-only\.safetensors: not a VAE"):
        single_file.load_vae(path, tmp_path / "cache", torch.float32, sdxl=False)
