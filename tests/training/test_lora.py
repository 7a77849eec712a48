"""The trainer: loss, moving toward the data, files, metadata, layouts, rules, cancel, resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from engine.diffusion.params import from_request
from engine.training.intake import import_dataset
from engine.training.layout import dataset_items
from engine.training.trainer import run_training
from engine.training.versions import Versions
from prompts.syntax import LoraTag
from tests.training.conftest import QUICK, TRIGGER, config_for, write_dataset


def dataset_latents(engine, config) -> torch.Tensor:
    """The training images as scaled VAE latents (posterior means)."""
    pipe = engine.pipe
    pixels = [
        torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
        for path, _ in dataset_items(config.datasets_dir / "dada")
    ]
    with torch.no_grad():
        batch = torch.stack(pixels).float() / 127.5 - 1
        return pipe.vae.encode(batch).latent_dist.mean * pipe.vae.config.scaling_factor


def denoising_loss(engine, latents: torch.Tensor, captions: list[str], lora: list) -> float:
    """The training objective on fixed noise and timesteps (no sampling noise in the figure)."""
    from diffusers import DDPMScheduler

    pipe = engine.pipe
    noise_scheduler = DDPMScheduler.from_config(engine._scheduler_config)  # as in training
    engine.loras.apply(lora)
    generator = torch.Generator().manual_seed(0)
    losses = []
    with torch.no_grad():
        ids = pipe.tokenizer(
            captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        hidden = pipe.text_encoder(ids)[0]
        for t in (50, 200, 400, 600, 800, 950):
            noise = torch.randn(latents.shape, generator=generator)
            timesteps = torch.full((len(latents),), t)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            pred = pipe.unet(noisy, timesteps, hidden).sample
            losses.append((pred - noise).pow(2).mean().item())
    return float(np.mean(losses))


def test_training_lowers_the_loss_on_the_training_set(trained, trained_engine):
    config, result, _ = trained
    latents = dataset_latents(trained_engine, config)
    captions = [
        (path.with_suffix(".txt")).read_text()
        for path, _ in dataset_items(config.datasets_dir / "dada")
    ]
    before = denoising_loss(trained_engine, latents, captions, [])
    after = denoising_loss(trained_engine, latents, captions, [LoraTag("dada-v1", 1.0)])
    assert after < before * 0.95, (before, after)
    assert result["status"] == "done" and result["epochs_done"] == 3


def test_generations_move_toward_the_dataset_in_latent_space(trained, trained_engine):
    """RMS distance of generated latents from the dataset's mean latent: the random base model
    strays far; each epoch of training brings its generations closer."""
    config, _, _ = trained
    centre = dataset_latents(trained_engine, config).mean(dim=0)
    pipe = trained_engine.pipe

    def distance(lora: list) -> float:
        trained_engine.loras.apply(lora)
        generators = [torch.Generator().manual_seed(seed) for seed in range(6)]
        with torch.no_grad():
            latents = pipe(
                [f"{TRIGGER}, solo, white background"] * 6,
                num_inference_steps=8,
                width=64,
                height=64,
                generator=generators,
                output_type="latent",
            ).images
        return (latents - centre).pow(2).mean().sqrt().item()

    base = distance([])
    first_epoch = distance([LoraTag("dada-v1-000001", 1.0)])
    final = distance([LoraTag("dada-v1", 1.0)])
    assert final < first_epoch < base, (base, first_epoch, final)
    assert final < 0.95 * base


def test_epoch_files_metadata_loss_log_curve_and_samples(trained):
    config, result, seen = trained
    lora_dir = config.loras_dir / "dada"
    names = sorted(p.name for p in lora_dir.glob("dada-v1*.safetensors"))
    assert names == [
        "dada-v1-000001.safetensors",
        "dada-v1-000002.safetensors",
        "dada-v1-000003.safetensors",
        "dada-v1.safetensors",
    ]
    with safe_open(str(lora_dir / "dada-v1.safetensors"), framework="pt") as file:
        meta = file.metadata()
        keys = list(file.keys())
    assert all(k.startswith(("lora_unet_", "lora_te_")) for k in keys)
    assert any(k.endswith(".alpha") for k in keys)
    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "4.0")
    assert meta["ss_num_epochs"] == "3" and meta["ss_epoch"] == "3"
    assert meta["ss_unet_lr"] == "0.003" and meta["ss_text_encoder_lr"] == "0.0001"
    assert meta["ss_resolution"] == "(64, 64)"
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW"
    assert meta["ss_num_train_images"] == str(6 * 4)
    assert meta["ss_sd_model_name"] == "tiny-sd15"
    float(meta["ss_training_started_at"])
    frequency = json.loads(meta["ss_tag_frequency"])
    assert frequency["10_dada"][TRIGGER] == 4  # 4 of the 6 captions have the trigger
    # loss per step in SQLite and CSV, progress per step with an ETA reaching 0
    steps = result["steps"]
    assert steps == 3 * 6 * 4 // 2
    csv_rows = (config.data_dir / "training/dada-v1/loss.csv").read_text().splitlines()
    assert len(csv_rows) == steps + 1
    assert [s[1] for s in seen] == list(range(1, steps + 1))
    assert seen[-1][0] == 3 and seen[-1][2] == steps and seen[-1][4] == 0
    with Image.open(result["loss_curve"]) as curve:
        assert curve.format == "PNG" and curve.width > 300
    # samples of the last epoch, rendered by the Engine with the epoch file
    assert len(result["samples"]) == 2
    with Image.open(result["samples"][0]) as sample:
        assert "<lora:dada-v1-000003:1>" in sample.info["parameters"]
    version = Versions(config).get("dada-v1")
    assert version["status"] == "done" and version["final_loss"] == pytest.approx(
        result["final_loss"]
    )
    assert version["params"]["network_dim"] == 4


def test_kohya_file_and_diffusers_weights_give_the_same_image(trained, trained_engine):
    config, _, _ = trained
    diffusers_file = config.data_dir / "training/dada-v1/dada-v1.diffusers.safetensors"
    copy = config.loras_dir / "layout_check_diffusers.safetensors"
    copy.write_bytes(diffusers_file.read_bytes())

    def image(lora: str) -> np.ndarray:
        request = {
            "prompt": f"{TRIGGER}, solo <lora:{lora}:0.8>",
            "seed": 5,
            "sampler_name": "DDIM",
        }
        params = from_request(request, config.generation, config.limits)
        return np.asarray(trained_engine.txt2img(params).images[0]).astype(int)

    kohya = image("dada-v1")
    diffusers = image("layout_check_diffusers")
    assert np.abs(kohya - diffusers).max() <= 1
    copy.unlink()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"network_alpha": 64, "network_dim": 32}, "network_alpha: 64 must be above 0 and at most"),
        ({"resolution": 500}, "resolution: 500 must be a multiple of 64"),
        ({"unet_lr": -1e-4}, "unet_lr: -0.0001 must not be negative"),
        ({"text_encoder_lr": "fast"}, "text_encoder_lr: 'fast' is not a valid float"),
        ({"network_dim": 0}, "network_dim: 0 must be at least 1"),
        ({"lr_scheduler": "warp"}, "lr_scheduler: 'warp' is not one of"),
        ({"epoch": 3}, "epoch: unknown training parameter"),
        ({"optimizer": "Lion"}, "optimizer: Lion needs the lion-pytorch package"),
        ({"mixed_precision": "fp16"}, "mixed_precision: fp16 needs a CUDA device"),
        ({"ip": "nobody"}, "ip: no IP named 'nobody'"),
        ({"dataset": "../etc"}, "name: '../etc' must be letters"),
    ],
)
def test_invalid_values_are_refused_with_the_rule(training_config, change, message):
    if change.get("optimizer") == "Lion":
        pytest.importorskip("torch")
        try:
            import lion_pytorch  # noqa: F401

            pytest.skip("lion-pytorch is installed here")
        except ImportError:
            pass
    import_dataset(write_dataset(training_config.data_dir / "raw"), "dada", training_config)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        run_training(training_config, {**QUICK, "epochs": 1, **change})
    assert not training_config.loras_dir.exists()  # refused before anything was written


def test_cancel_keeps_the_last_saved_epoch(training_config):
    import_dataset(write_dataset(training_config.data_dir / "raw"), "dada", training_config)
    steps: list[int] = []
    params = {**QUICK, "repeats": 1, "batch_size": 3, "epochs": 3, "sample_every_n_epochs": 0}
    result = run_training(
        training_config,
        params,
        progress=lambda epoch, step, *_: steps.append(step),
        cancelled=lambda: len(steps) >= 3,  # 2 steps per epoch: stop during epoch 2
    )
    assert result["status"] == "cancelled" and result["epochs_done"] == 1
    assert result["file"].endswith("dada-v1-000001.safetensors")
    assert not (training_config.loras_dir / "dada" / "dada-v1.safetensors").exists()
    version = Versions(training_config).get("dada-v1")
    assert version["status"] == "cancelled" and version["file"] == result["file"]


CHILD = """
import json, sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
from pathlib import Path
from posterbot.config import Config, GenerationSettings, IPConfig, ModelsConfig
from engine.training.trainer import run_training
spec = json.loads(sys.argv[1])
config = Config(
    data_dir=Path(spec["data_dir"]),
    models=ModelsConfig(base=spec["model"]),
    generation=GenerationSettings(width=64, height=64, steps=4, sampler_name="Euler a"),
    ips=[IPConfig(name="dada", trigger="dadaknight", lora="dada_lora")],
)
run_training(config, spec["params"], progress=lambda *a: print("step", a[1], flush=True))
"""


def test_a_killed_run_resumes_from_its_last_epoch(training_config, tmp_path):
    config = config_for(training_config, tmp_path / "data")
    import_dataset(write_dataset(tmp_path / "raw"), "dada", config)
    params = {**QUICK, "repeats": 2, "batch_size": 2, "epochs": 3, "sample_every_n_epochs": 0}
    spec = {"data_dir": str(config.data_dir), "model": config.models.base, "params": params}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=root))
    state = config.data_dir / "training/dada-v1/state.pt"
    child = subprocess.Popen(
        [sys.executable, str(script), json.dumps(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not state.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert state.exists(), "the child never saved an epoch"
    first_epoch = config.loras_dir / "dada/dada-v1-000001.safetensors"
    saved = first_epoch.stat().st_mtime_ns

    result = run_training(config, params)
    assert result["version"] == "dada-v1"  # the same version, not a new one
    assert 1 <= result["resumed_from_epoch"] < 3
    assert result["status"] == "done" and result["epochs_done"] == 3
    if result["resumed_from_epoch"] >= 1:
        assert first_epoch.stat().st_mtime_ns == saved  # not trained again
    rows = (config.data_dir / "training/dada-v1/loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, result["steps"] + 1))
    assert [v["name"] for v in Versions(config).list("dada")] == ["dada-v1"]


def test_an_sdxl_base_is_refused_before_anything_is_queued_or_written(training_config, tmp_path):
    import dataclasses

    from engine.diffusion.tiny import write_demo_model
    from engine.training.params import check_train_request

    sdxl = write_demo_model(tmp_path / "tiny-sdxl", kind="sdxl")
    config = dataclasses.replace(
        training_config, models=dataclasses.replace(training_config.models, base=str(sdxl))
    )
    import_dataset(write_dataset(config.data_dir / "raw"), "dada", config)
    with pytest.raises(ValueError, match="model: SDXL LoRA training is not supported yet"):
        check_train_request(config, {"ip": "dada", "dataset": "dada"}, {"cuda"})
    request = {"ip": "dada", "dataset": "dada"}
    assert check_train_request(training_config, request, {"cuda"}).ip == "dada"


def test_train_with_a_zip_imports_it_once_so_the_same_command_finds_the_same_dataset(
    training_config, tmp_path, capsys
):
    from posterbot.cli import main
    from tests.training.conftest import mascot_zip

    config_file = tmp_path / "config.toml"
    config_file.write_text(
        f'data_dir = "{training_config.data_dir}"\n[models]\nbase = "{training_config.models.base}"'
        f'\n[[ips]]\nname = "dada"\ntrigger = "{TRIGGER}"\n'
    )
    archive = tmp_path / "dada.zip"
    archive.write_bytes(mascot_zip())
    quick = {**QUICK, "epochs": 1, "repeats": 1, "sample_every_n_epochs": 0}
    settings = [f"{k}={v}" for k, v in quick.items() if k not in ("ip", "dataset")]
    command = ["--config", str(config_file), "train", "--ip", "dada", "--dataset", str(archive)]
    datasets = []
    for _ in range(2):
        assert main([*command, *settings]) == 0
        printed = capsys.readouterr().out
        datasets.append(re.search(r" as datasets/(\S+)", printed)[1])
        assert json.loads(printed[printed.index("{") :])["status"] == "done"
    assert "was imported before as datasets/" + datasets[0] in printed
    assert datasets[0] == datasets[1] and datasets[0].startswith("dada-")
    assert [p.name for p in training_config.datasets_dir.iterdir()] == [datasets[0]]


def test_the_trainers_base_model_loads_with_no_load_report(training_config, capfd):
    """The trainer loads the base model with `load_pipeline`; the tiny model saves every tensor
    its text encoder has, so transformers reports nothing newly initialized. (The reports seen
    during training came from its sample images loading epoch LoRAs one beside another:
    tests/engine/test_lora.py checks those are quiet.)"""
    from engine.diffusion.generate import load_pipeline
    from engine.diffusion.registry import Registry

    registry = Registry(training_config)
    capfd.readouterr()
    pipe = load_pipeline(registry.checkpoint(), registry, torch.device("cpu"), torch.float32)
    output = capfd.readouterr()
    assert "LOAD REPORT" not in output.out + output.err
    assert "newly initialized" not in output.out + output.err
    with safe_open(training_config.models.base + "/text_encoder/model.safetensors", "pt") as saved:
        assert set(saved.keys()) == set(pipe.text_encoder.state_dict())  # nothing missing
