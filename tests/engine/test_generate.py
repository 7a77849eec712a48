"""txt2img on the tiny model: seeds, batches, variation seeds, cancellation, SDXL."""

from __future__ import annotations

import numpy as np
import pytest

from engine.diffusion.generate import Cancelled, Engine
from engine.diffusion.params import from_request


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(int)


def run(engine, **request):
    params = from_request(request, engine.config.generation, engine.config.limits)
    return engine.txt2img(params)


def test_same_seed_same_pixels_other_seed_differs(engine):
    first = run(engine, prompt="a cat in the snow", seed=42)
    again = run(engine, prompt="a cat in the snow", seed=42)
    other = run(engine, prompt="a cat in the snow", seed=43)
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert np.abs(pixels(first.images[0]) - pixels(other.images[0])).mean() > 1


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ 2M SDE Karras"])  # both draw step noise
def test_image_i_of_a_batch_equals_a_single_run_at_seed_plus_i(engine, sampler):
    batch = run(engine, prompt="a red poster", seed=100, batch_size=3, sampler_name=sampler)
    assert batch.seeds == [100, 101, 102]
    for i in range(3):
        single = run(engine, prompt="a red poster", seed=100 + i, sampler_name=sampler)
        # Batched and single convolutions may round differently on the CPU: at most 1 level.
        assert np.abs(pixels(batch.images[i]) - pixels(single.images[0])).max() <= 1


def test_n_iter_continues_the_seeds_across_batches(engine):
    result = run(engine, prompt="x", seed=7, batch_size=2, n_iter=2)
    assert len(result.images) == 4
    assert result.seeds == [7, 8, 9, 10]
    for seed, text in zip(result.seeds, result.infotexts, strict=True):
        assert f"Seed: {seed}," in text


def test_variation_seed_keeps_the_seed_and_moves_the_image(engine):
    plain = run(engine, prompt="x", seed=5)
    varied = run(engine, prompt="x", seed=5, subseed=9, subseed_strength=0.3, batch_size=2)
    assert varied.seeds == [5, 5] and varied.subseeds == [9, 10]
    diff = np.abs(pixels(plain.images[0]) - pixels(varied.images[0])).mean()
    assert diff > 0.5
    assert "Variation seed: 9, Variation seed strength: 0.3" in varied.infotexts[0]


def test_random_seed_is_resolved_and_reported(engine):
    result = run(engine, prompt="x", seed=-1)
    assert 0 <= result.seeds[0] < 2**32
    assert f"Seed: {result.seeds[0]}," in result.infotexts[0]


def test_progress_reports_every_step_and_cancel_stops_between_steps(engine):
    reports = []
    run_params = from_request(
        {"prompt": "x", "steps": 5, "seed": 1}, engine.config.generation, engine.config.limits
    )
    engine.txt2img(run_params, progress=lambda *r: reports.append(r))
    assert reports == [("txt2img", i, 5) for i in range(1, 6)]

    calls = []

    def cancelled() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(Cancelled):
        engine.txt2img(run_params, cancelled=cancelled)
    assert len(calls) == 2  # stopped after the second step, not at the end


def test_weighted_word_and_words_after_token_77_change_the_image(engine):
    # Random tiny weights react weakly to text, so "changed" means "not the same pixels".
    base = run(engine, prompt="a cat, snow", seed=3)
    weighted = run(engine, prompt="a cat, (snow:1.5)", seed=3)
    assert not np.array_equal(pixels(base.images[0]), pixels(weighted.images[0]))

    long_prompt = ", ".join(["a cat"] * 40)  # well past 75 tokens
    long_a = run(engine, prompt=long_prompt + ", red", seed=3)
    long_b = run(engine, prompt=long_prompt + ", blue", seed=3)
    assert not np.array_equal(pixels(long_a.images[0]), pixels(long_b.images[0]))


def test_demo_model_says_so_in_every_infotext(tmp_path, with_config, engine_config):
    config = with_config(engine_config, "models", base="")
    config = type(config)(**{**config.__dict__, "data_dir": tmp_path})
    demo = Engine(config)
    result = demo.txt2img(
        from_request({"prompt": "x", "seed": 1}, config.generation, config.limits)
    )
    assert result.is_demo and result.model_name == "posterbot-demo"
    assert "Demo model:" in result.infotexts[0]
    assert (
        tmp_path / "models" / "Stable-diffusion" / "posterbot-demo" / "model_index.json"
    ).exists()


def test_sdxl_tiny_model_generates_with_webui_conditioning(tmp_path, with_config, engine_config):
    from engine.diffusion.tiny import write_demo_model

    folder = write_demo_model(tmp_path / "tiny-sdxl", kind="sdxl")
    engine = Engine(with_config(engine_config, "models", base=str(folder)))
    result = run(engine, prompt="a (cat:1.2) BREAK in the snow", seed=11, width=64, height=128)
    assert result.images[0].size == (64, 128)
    assert "Model: tiny-sdxl" in result.infotexts[0]


def test_compatible_requests_batched_together_keep_their_own_prompts_and_seeds(engine):
    lone_a = run(engine, prompt="a cat", seed=50, batch_size=2)
    lone_b = run(engine, prompt="a dog in the city", seed=70)
    requests = [
        from_request(r, engine.config.generation, engine.config.limits)
        for r in (
            {"prompt": "a cat", "seed": 50, "batch_size": 2},
            {"prompt": "a dog in the city", "seed": 70},
        )
    ]
    assert requests[0].batch_key() == requests[1].batch_key()
    batched_a, batched_b = engine.generate_batch(requests)
    assert batched_a.seeds == [50, 51] and batched_b.seeds == [70]
    assert batched_b.infotexts[0].startswith("a dog in the city\n")
    for lone, batched in ((lone_a, batched_a), (lone_b, batched_b)):
        for single, together in zip(lone.images, batched.images, strict=True):
            assert np.abs(pixels(single) - pixels(together)).max() <= 1


def test_incompatible_requests_are_refused_as_one_batch(engine):
    requests = [
        from_request({"prompt": "x", "steps": s}, engine.config.generation, engine.config.limits)
        for s in (3, 4)
    ]
    assert requests[0].batch_key() != requests[1].batch_key()
    with pytest.raises(ValueError, match="jobs: requests differ"):
        engine.generate_batch(requests)


def test_vae_override_from_a_folder_is_used_and_named(tiny_model, with_config, engine_config):
    config = with_config(engine_config, "models", vae=str(tiny_model / "vae"))
    result = run(Engine(config), prompt="a cat", seed=1)
    assert "VAE: vae," in result.infotexts[0]
