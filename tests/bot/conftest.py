"""End-to-end fixtures: the real engine service on the tiny model (a child process, as in
production), a fake Telegram Bot API on 127.0.0.1, and real Applications pointed at both."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posterbot.config import AccessConfig, BotConfig, Config, TelegramConfig, load_config
from tests.fakes.models import write_lora_pair
from tests.fakes.telegram_api import TOKEN, FakeTelegram

OWNER, USER, STRANGER = 100, 200, 300
GROUP = -1001
ENGINE_START_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def engine_config_file(tmp_path_factory, tiny_model) -> Path:
    """The tiny model and one IP, `dada`, whose posters use the LoRA `dada_lora` (a random one,
    so admins have something to promote over)."""
    from diffusers import DiffusionPipeline

    folder = tmp_path_factory.mktemp("engine")
    loras = folder / "data" / "models" / "Lora"
    kohya, diffusers = write_lora_pair(
        DiffusionPipeline.from_pretrained(tiny_model), loras, "start"
    )
    kohya.rename(loras / "dada_lora.safetensors")
    diffusers.unlink()
    path = folder / "config.toml"
    path.write_text(
        f"""data_dir = "{folder / "data"}"
[models]
base = "{tiny_model}"
[generation]
width = 64
height = 64
steps = 4
sampler_name = "Euler a"
[engine]
port = {free_port()}
devices = ["cpu"]
[[ips]]
name = "dada"
trigger = "dadaknight"
lora = "dada_lora"
"""
    )
    return path


@pytest.fixture(scope="session")
def engine_url(engine_config_file) -> str:
    """`posterbot engine` on the tiny model, for the whole session."""
    config = load_config(engine_config_file, environ={})
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTERBOT_")}
    child = subprocess.Popen(
        [sys.executable, "-m", "posterbot", "--config", str(engine_config_file), "engine"], env=env
    )
    url = f"http://127.0.0.1:{config.engine.port}"
    try:
        asyncio.run(wait_healthy(url, child))
        yield url
    finally:
        child.terminate()
        child.wait(timeout=60)


async def wait_healthy(url: str, child: subprocess.Popen) -> None:
    from engine.service.client import EngineClient, EngineError

    deadline = time.monotonic() + ENGINE_START_TIMEOUT_S
    async with EngineClient(url, retries=0) as engine:
        while time.monotonic() < deadline and child.poll() is None:
            try:
                if (await engine.health()).get("ok"):
                    return
            except EngineError:
                pass
            await asyncio.sleep(0.3)
    raise RuntimeError("the engine service did not become healthy")


@pytest.fixture
async def telegram():
    fake = await FakeTelegram().start()
    yield fake
    await fake.stop()


@pytest.fixture
def bot_config(engine_config_file, engine_url, telegram, tmp_path) -> Config:
    engine_config = load_config(engine_config_file, environ={})
    return dataclasses.replace(
        engine_config,
        data_dir=tmp_path / "bot-data",
        telegram=TelegramConfig(
            base_url=telegram.base_url,
            base_file_url=telegram.base_file_url,
            progress_interval_private_s=0.2,
            progress_interval_group_s=0.6,
            send_retries=2,
        ),
        access=AccessConfig(owners=[OWNER], users=[USER], groups=[GROUP]),
        bot=BotConfig(engine_url=engine_url),
    )


@pytest.fixture
async def bot(bot_config):
    """A running bot (real Application, polling the fake API)."""
    from bot.app import build_application, running

    application = build_application(bot_config, TOKEN)
    async with running(application):
        yield application
