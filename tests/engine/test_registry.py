"""Model lookup like WebUI's folders, pickle refusal, and WebUI-compatible hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct

import pytest

from engine.diffusion.registry import Registry, addnet_hash
from posterbot.config import Config


@pytest.fixture
def registry(tmp_path):
    return Registry(Config(data_dir=tmp_path))


def write_safetensors(path, payload: bytes = b"\x00" * 16) -> None:
    header = json.dumps(
        {"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + payload)


def test_no_base_model_means_the_demo_model(registry):
    ref = registry.checkpoint()
    assert ref.is_demo and ref.name == "posterbot-demo"


def test_checkpoint_names_resolve_in_the_stable_diffusion_folder(registry):
    write_safetensors(registry.config.checkpoints_dir / "revAnimated_v122.safetensors")
    ref = registry.checkpoint("revAnimated_v122")
    assert (ref.kind, ref.name) == ("file", "revAnimated_v122")
    assert [c.name for c in registry.checkpoints()] == ["revAnimated_v122"]
    assert registry.checkpoint("org/some-model").kind == "hub"


def test_pickle_checkpoints_and_unknown_names_are_refused(registry):
    (registry.config.checkpoints_dir).mkdir(parents=True)
    (registry.config.checkpoints_dir / "old.ckpt").write_bytes(b"pickle")
    with pytest.raises(ValueError, match=r"old\.ckpt is a pickle file"):
        registry.checkpoint("old.ckpt")
    with pytest.raises(ValueError, match="model: 'missing' not found"):
        registry.checkpoint("missing")


def test_model_hash_is_sha256_prefix_and_lora_hash_skips_the_header(registry):
    checkpoint = registry.config.checkpoints_dir / "m.safetensors"
    write_safetensors(checkpoint, b"\x01" * 32)
    data = checkpoint.read_bytes()
    assert registry.model_hash(registry.checkpoint("m")) == hashlib.sha256(data).hexdigest()[:10]

    lora = registry.config.loras_dir / "sub" / "dada_v3.safetensors"
    write_safetensors(lora, b"\x02" * 32)
    header_length = struct.unpack("<Q", lora.read_bytes()[:8])[0]
    tensor_bytes = lora.read_bytes()[8 + header_length :]
    assert addnet_hash(lora) == hashlib.sha256(tensor_bytes).hexdigest()
    assert registry.lora_hash(lora) == hashlib.sha256(tensor_bytes).hexdigest()[:12]
    assert registry.loras() == {"dada_v3": lora}  # found in subfolders, as WebUI does


def test_hashes_are_cached_and_refreshed_when_the_file_changes(registry):
    lora = registry.config.loras_dir / "x.safetensors"
    write_safetensors(lora, b"\x03" * 8)
    first = registry.lora_hash(lora)
    assert json.loads((registry.config.data_dir / "cache" / "hashes.json").read_text())
    write_safetensors(lora, b"\x04" * 9)
    assert registry.lora_hash(lora) != first


def test_vae_override_must_exist(registry):
    config = dataclasses.replace(
        registry.config, models=dataclasses.replace(registry.config.models, vae="nope.safetensors")
    )
    with pytest.raises(ValueError, match=r"models\.vae: 'nope\.safetensors' not found"):
        Registry(config).vae()


def test_a_checkpoint_converted_beside_its_file_is_listed_once_and_loads_as_the_folder(registry):
    folder = registry.config.checkpoints_dir
    write_safetensors(folder / "anything-v3.safetensors")
    (folder / "anything-v3").mkdir()
    (folder / "anything-v3" / "model_index.json").write_text("{}")
    assert [(c.name, c.kind) for c in registry.checkpoints()] == [("anything-v3", "folder")]
    assert registry.checkpoint("anything-v3").kind == "folder"
    assert registry.checkpoint("anything-v3.safetensors").kind == "file"
