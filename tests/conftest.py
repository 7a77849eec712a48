"""Shared fixtures: the tiny offline model, a config pointing at it, one warm engine."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from posterbot.config import Config, GenerationSettings, ModelsConfig


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from engine.diffusion.tiny import write_demo_model

    return write_demo_model(tmp_path_factory.mktemp("models") / "tiny-sd15")


@pytest.fixture(scope="session")
def engine_config(tmp_path_factory, tiny_model) -> Config:
    """Small defaults so each generation takes a fraction of a second on the CPU."""
    return Config(
        data_dir=tmp_path_factory.mktemp("data"),
        models=ModelsConfig(base=str(tiny_model)),
        generation=GenerationSettings(width=64, height=64, steps=4, sampler_name="Euler a"),
    )


@pytest.fixture(scope="session")
def engine(engine_config):
    from engine.diffusion.generate import Engine

    return Engine(engine_config)


@pytest.fixture
def with_config():
    def replace(config: Config, section: str, **changes) -> Config:
        return dataclasses.replace(
            config, **{section: dataclasses.replace(getattr(config, section), **changes)}
        )

    return replace
