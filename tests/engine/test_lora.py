"""LoRA files from models/Lora: both layouts, weights, several at once, caching, refusals."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from engine.diffusion.generate import Engine
from engine.diffusion.params import from_request
from tests.fakes.models import write_lora_pair


@pytest.fixture(scope="module")
def lora_engine(tmp_path_factory, engine_config, with_config_module):
    """An engine whose models/Lora holds the same random LoRA in both layouts, and a second one."""
    from diffusers import DiffusionPipeline

    config = with_config_module(engine_config, data_dir=tmp_path_factory.mktemp("lora-data"))
    scratch = DiffusionPipeline.from_pretrained(config.models.base)
    write_lora_pair(scratch, config.loras_dir, "mascot", seed=3)
    scratch = DiffusionPipeline.from_pretrained(config.models.base)
    write_lora_pair(scratch, config.loras_dir, "style", seed=4)
    return Engine(config)


@pytest.fixture(scope="module")
def with_config_module():
    import dataclasses

    return lambda config, **changes: dataclasses.replace(config, **changes)


def image(engine, prompt, **extra):
    request = {"prompt": prompt, "seed": 21, **extra}
    params = from_request(request, engine.config.generation, engine.config.limits)
    result = engine.txt2img(params)
    return np.asarray(result.images[0]).astype(int), result


def test_weight_zero_equals_no_lora_and_weight_one_changes_the_image(lora_engine):
    plain, _ = image(lora_engine, "a cat")
    zero, _ = image(lora_engine, "a cat <lora:mascot_kohya:0>")
    full, result = image(lora_engine, "a cat <lora:mascot_kohya:1>")
    assert np.array_equal(plain, zero)
    assert np.abs(plain - full).mean() > 1
    # After a LoRA was used, a prompt without one is the plain image again (adapters disabled).
    assert np.array_equal(plain, image(lora_engine, "a cat")[0])
    assert result.loras[0].name == "mascot_kohya"


def test_kohya_and_diffusers_layouts_of_the_same_weights_give_the_same_image(lora_engine):
    kohya, _ = image(lora_engine, "a cat <lora:mascot_kohya:0.8>")
    diffusers, _ = image(lora_engine, "a cat <lora:mascot_diffusers:0.8>")
    assert np.abs(kohya - diffusers).max() <= 1


def test_several_loras_with_weights_and_lora_hashes_in_infotext(lora_engine):
    one, _ = image(lora_engine, "a cat <lora:mascot_kohya:0.7>")
    both, result = image(lora_engine, "a cat <lora:mascot_kohya:0.7> <lora:style_kohya:0.5>")
    assert not np.array_equal(one, both)
    line = result.infotexts[0].splitlines()[-1]
    hashes = {lora.name: lora.hash for lora in result.loras}
    assert len(hashes["mascot_kohya"]) == 12
    pairs = f"mascot_kohya: {hashes['mascot_kohya']}, style_kohya: {hashes['style_kohya']}"
    assert f'Lora hashes: "{pairs}"' in line
    # the prompt keeps its tags in the infotext, as WebUI's does
    assert result.infotexts[0].startswith("a cat <lora:mascot_kohya:0.7>")


def test_lora_flag_is_the_same_as_a_prompt_tag(lora_engine):
    tagged, _ = image(lora_engine, "a cat <lora:style_kohya:0.6>")
    flagged, _ = image(lora_engine, "a cat", loras=[{"name": "style_kohya", "weight": 0.6}])
    assert np.array_equal(tagged, flagged)


def test_a_changed_file_is_reloaded(lora_engine, tmp_path):
    before, _ = image(lora_engine, "a cat <lora:mascot_kohya:1>")
    path = lora_engine.config.loras_dir / "mascot_kohya.safetensors"
    replacement = lora_engine.config.loras_dir / "style_kohya.safetensors"
    original = path.read_bytes()
    try:
        path.write_bytes(replacement.read_bytes())
        os.utime(path, (1, 1))  # a different modification time, as a new version has
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            after, _ = image(lora_engine, "a cat <lora:mascot_kohya:1>")
        assert not [w for w in caught if "deleted" in str(w.message)]  # no peft notice
        as_style, _ = image(lora_engine, "a cat <lora:style_kohya:1>")
        assert np.abs(after - as_style).max() <= 1
        assert not np.array_equal(before, after)
    finally:
        path.write_bytes(original)


def test_fused_lora_matches_unfused(lora_engine, with_config):
    config = with_config(lora_engine.config, "models", fuse_lora=True)
    fused_engine = Engine(config)
    unfused, _ = image(lora_engine, "a cat <lora:mascot_kohya:0.8>")
    fused, _ = image(fused_engine, "a cat <lora:mascot_kohya:0.8>")
    again, _ = image(fused_engine, "a cat <lora:mascot_kohya:0.8>")  # stays fused
    plain, _ = image(fused_engine, "a cat")  # unfuses
    assert np.abs(unfused - fused).max() <= 2
    assert np.array_equal(fused, again)
    # Unfusing subtracts the LoRA again: float rounding may leave a level of difference.
    assert np.abs(plain - image(lora_engine, "a cat")[0]).max() <= 2


def test_missing_and_pickle_loras_are_refused_with_the_reason(lora_engine):
    with pytest.raises(ValueError, match=r"lora: 'nope' not found.*mascot_kohya"):
        image(lora_engine, "a cat <lora:nope:1>")
    (lora_engine.config.loras_dir / "evil.ckpt").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match=r"evil.ckpt is a pickle file.*only .safetensors"):
        image(lora_engine, "a cat <lora:evil:1>")
    with pytest.raises(ValueError, match="weight that is not a number"):
        image(lora_engine, "a cat <lora:mascot_kohya:lots>")


# Names that share a prefix: two LoRAs of one IP, and a training run's epoch files, which its
# sample images load one after another (they printed ~38 report lines per training).
@pytest.mark.parametrize("names", [("x", "x_full"), ("dada-v1-000001", "dada-v1-000002")])
def test_loras_whose_names_share_a_prefix_load_quietly_and_both_apply(
    names, tmp_path, engine_config, with_config_module, capfd
):
    import shutil

    from diffusers import DiffusionPipeline

    config = with_config_module(engine_config, data_dir=tmp_path)
    for name, seed in zip(names, (5, 6), strict=True):
        scratch = DiffusionPipeline.from_pretrained(config.models.base)
        kohya, _ = write_lora_pair(scratch, tmp_path / "scratch", name, seed=seed)
        config.loras_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kohya, config.loras_dir / f"{name}.safetensors")
    engine = Engine(config)
    plain, _ = image(engine, "a cat")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, _ = image(engine, f"a cat <lora:{names[0]}:1>")
        both, result = image(engine, f"a cat <lora:{names[0]}:1> <lora:{names[1]}:1>")
    output = capfd.readouterr()
    noise = output.out + output.err + "".join(str(w.message) for w in caught)
    assert "LOAD REPORT" not in noise and "MISSING" not in noise and "peft_config" not in noise
    assert "Loading weights" not in noise  # no progress bars in a log (stderr is no terminal)
    assert [lora.name for lora in result.loras] == list(names)
    assert np.abs(plain - x).mean() > 1 and np.abs(x - both).mean() > 1  # each one applies
