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
    assert with_base(registry, "org/some-model").checkpoint().kind == "hub"  # the admin's choice


def with_base(registry: Registry, base: str) -> Registry:
    config = registry.config
    return Registry(
        dataclasses.replace(config, models=dataclasses.replace(config.models, base=base))
    )


def test_pickle_checkpoints_and_unknown_names_are_refused(registry):
    (registry.config.checkpoints_dir).mkdir(parents=True)
    (registry.config.checkpoints_dir / "old.ckpt").write_bytes(b"pickle")
    with pytest.raises(ValueError, match=r"old\.ckpt is a pickle file"):
        with_base(registry, "old.ckpt").checkpoint()
    with pytest.raises(ValueError, match="model: 'missing' not found"):
        with_base(registry, "missing").checkpoint()
    with pytest.raises(ValueError, match="model: 'missing' is not a model in models/Stable-diff"):
        registry.checkpoint("missing")


def test_a_request_names_only_models_of_the_folder_never_a_path_or_a_hub_id(registry, tmp_path):
    """Whatever exists elsewhere, a request naming it gets the same answer, naming no path."""
    elsewhere = tmp_path / "elsewhere" / "model"
    elsewhere.mkdir(parents=True)
    (elsewhere / "model_index.json").write_text("{}")
    write_safetensors(tmp_path / "secret.safetensors")
    names = [str(elsewhere), str(tmp_path / "secret.safetensors"), "/etc/shadow"]
    names += ["/nonexistent/x", "../secret", "org/some-model", "old.ckpt"]
    answers = set()
    for name in names:
        with pytest.raises(ValueError) as refused:
            registry.checkpoint(name)
        answers.add(str(refused.value).replace(repr(name), "NAME"))
    assert answers == {"model: NAME is not a model in models/Stable-diffusion"}


def test_a_lora_name_reaching_outside_the_folder_is_only_not_found(registry, tmp_path):
    (tmp_path / "pickled.ckpt").write_bytes(b"pickle")
    (registry.config.loras_dir).mkdir(parents=True)
    answers = set()
    for name in ("../pickled", "../missing", "/etc/passwd", "..\\pickled"):
        with pytest.raises(ValueError) as refused:
            registry.lora(name)
        assert refused.value.code == "lora_missing" and str(tmp_path) not in str(refused.value)
        answers.add(str(refused.value).replace(repr(name), "NAME"))
    assert len(answers) == 1  # whether a file exists there or not


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
    assert registry.checkpoint("anything-v3.safetensors").kind == "folder"  # requests: by name
    assert with_base(registry, "anything-v3.safetensors").checkpoint().kind == "file"  # config
