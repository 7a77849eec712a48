"""Versions: promote and rollback change the next poster; outside LoRAs; pickles refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine.diffusion import infotext
from engine.diffusion.params import from_request
from engine.training.versions import Versions
from tests.fakes.models import write_lora_pair
from tests.training.conftest import TRIGGER


def poster(engine, lora: str) -> np.ndarray:
    """What a poster request of the IP renders: its configured LoRA name at its weight."""
    request = {"prompt": f"{TRIGGER}, solo <lora:{lora}:1>", "seed": 11}
    params = from_request(request, engine.config.generation, engine.config.limits)
    return np.asarray(engine.txt2img(params).images[0]).astype(int)


def test_promote_and_rollback_change_what_the_next_poster_uses(trained, trained_engine, tmp_path):
    from diffusers import DiffusionPipeline

    config = trained[0]
    ip = config.ips[0]
    versions = Versions(config)
    scratch = DiffusionPipeline.from_pretrained(config.models.base)
    outside, _ = write_lora_pair(scratch, tmp_path, "other_trainer", seed=9)
    v2 = versions.register(ip, outside)
    assert v2["name"] == "dada-v2" and v2["source"] == "registered"

    v1_image = poster(trained_engine, "dada-v1")
    v2_image = poster(trained_engine, "dada-v2")
    assert np.abs(v1_image - v2_image).mean() > 1

    versions.promote(ip, "dada-v1")
    assert np.array_equal(poster(trained_engine, ip.lora), v1_image)
    versions.promote(ip, "dada-v2")
    assert np.array_equal(poster(trained_engine, ip.lora), v2_image)  # reloaded from disk
    assert versions.promoted("dada") == "dada-v2"
    assert [v["name"] for v in versions.list("dada") if v["promoted"]] == ["dada-v2"]
    back = versions.rollback(ip)
    assert back["name"] == "dada-v1"
    assert np.array_equal(poster(trained_engine, ip.lora), v1_image)
    with pytest.raises(ValueError, match="no earlier promoted version"):
        versions.rollback(ip)
    assert versions.export("dada-v1").name == "dada-v1.safetensors"


def test_the_file_in_use_before_the_first_promote_stays_reachable(training_config, tmp_path):
    from diffusers import DiffusionPipeline

    scratch = DiffusionPipeline.from_pretrained(training_config.models.base)
    first, _ = write_lora_pair(scratch, tmp_path, "first", seed=1)
    in_use = training_config.loras_dir / "dada_lora.safetensors"
    in_use.parent.mkdir(parents=True)
    in_use.write_bytes(first.read_bytes())
    versions = Versions(training_config)
    scratch = DiffusionPipeline.from_pretrained(training_config.models.base)
    second, _ = write_lora_pair(scratch, tmp_path, "second", seed=2)
    new = versions.register(training_config.ips[0], second)
    versions.promote(training_config.ips[0], new["name"])
    assert in_use.read_bytes() == second.read_bytes()
    before = versions.rollback(training_config.ips[0])
    assert before["source"] == "previous" and in_use.read_bytes() == first.read_bytes()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("old.ckpt", b"\x80\x04pickle", "pickle file"),
        ("weights.pt", b"\x80\x04pickle", "pickle file"),
        ("garbage.safetensors", b"not a safetensors file", "not a readable safetensors"),
        ("model.safetensors", None, "has no LoRA weights"),
    ],
)
def test_register_refuses_what_is_not_a_safetensors_lora(
    training_config, tmp_path, name, content, message
):
    path = tmp_path / name
    if content is None:
        save_file({"model.diffusion_model.conv_in.weight": torch.zeros(4, 4)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        Versions(training_config).register(training_config.ips[0], path)
    assert Versions(training_config).list() == []


def test_promote_needs_a_configured_lora_name(training_config, tmp_path):
    import dataclasses

    ip = dataclasses.replace(training_config.ips[0], lora="")
    with pytest.raises(ValueError, match=r"ips\[dada\]\.lora: empty"):
        Versions(training_config).promote(ip, "dada-v1")


def test_a_poster_names_the_version_promoted_into_its_lora_file(trained, trained_engine):
    config = trained[0]
    ip = config.ips[0]
    Versions(config).promote(ip, "dada-v1")
    request = {"prompt": f"{TRIGGER}, solo <lora:{ip.lora}:1>", "seed": 11}
    params = from_request(request, config.generation, config.limits)
    parsed = infotext.parse(infotext.read_png(trained_engine.txt2img(params).png(0)))
    assert parsed["Lora versions"] == f"{ip.lora}: dada-v1"
    assert parsed["Lora hashes"].startswith(f"{ip.lora}: ")  # WebUI's key, as WebUI writes it


def test_promoting_a_version_that_does_not_exist_names_it_with_a_stable_code(training_config):
    """So the chat says 没有版本 dada-v9 instead of a generic 'invalid value'."""
    with pytest.raises(ValueError, match="version: dada has no version 'dada-v9'") as refused:
        Versions(training_config).promote(training_config.ips[0], "dada-v9")
    assert refused.value.code == "version_unknown"
    assert refused.value.values == {"version": "dada-v9"}
