"""Every WebUI sampler name the issue lists builds its scheduler and generates."""

from __future__ import annotations

import numpy as np
import pytest

from engine.diffusion.params import from_request
from engine.diffusion.samplers import SAMPLERS, check_sampler
from prompts.spec import SAMPLER_NAMES

REQUIRED = [
    "Euler a", "Euler", "DDIM", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ SDE Karras",
    "DPM++ 2M SDE Karras", "UniPC", "Heun", "LMS", "DPM2", "DPM2 a", "LCM",
]  # fmt: skip


def test_the_prompt_builder_and_the_engine_know_the_same_samplers():
    assert set(SAMPLER_NAMES) == set(SAMPLERS)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_each_sampler_generates_deterministically(engine, name):
    request = {"prompt": "a cat", "seed": 4, "steps": 3, "sampler_name": name}
    params = from_request(request, engine.config.generation, engine.config.limits)
    first = engine.txt2img(params)
    again = engine.txt2img(params)
    assert type(engine.pipe.scheduler).__name__ == SAMPLERS[name][0]
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))
    assert f"Sampler: {name}," in first.infotexts[0]


def test_karras_variants_use_karras_sigmas(engine):
    params = from_request(
        {"prompt": "x", "steps": 2, "sampler_name": "DPM++ 2M Karras"},
        engine.config.generation,
        engine.config.limits,
    )
    engine.txt2img(params)
    assert engine.pipe.scheduler.config.use_karras_sigmas is True


def test_required_names_are_all_supported():
    assert [check_sampler(name) for name in REQUIRED] == REQUIRED
