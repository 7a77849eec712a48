"""GPU-only checks (skipped without CUDA): half precision, SDPA, the same picture as on the CPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from engine.diffusion.generate import Engine
from engine.diffusion.params import from_request

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_cuda_runs_in_half_precision_with_sdpa_and_draws_what_the_cpu_draws(engine_config, engine):
    from diffusers.models.attention_processor import AttnProcessor2_0

    config = dataclasses.replace(
        engine_config, models=dataclasses.replace(engine_config.models, device="cuda")
    )
    gpu = Engine(config)
    assert gpu.dtype == torch.float16 and gpu.pipe.unet.device.type == "cuda"
    processors = gpu.pipe.unet.attn_processors.values()
    assert all(isinstance(p, AttnProcessor2_0) for p in processors)

    params = from_request({"prompt": "a cat", "seed": 3}, config.generation, config.limits)
    on_gpu = np.asarray(gpu.txt2img(params).images[0]).astype(int)
    on_cpu = np.asarray(engine.txt2img(params).images[0]).astype(int)
    # The noise comes from the seed on the CPU either way; float16 rounding stays small.
    assert np.abs(on_gpu - on_cpu).mean() < 4
