"""`posterbot run`: the engine and the bot (or the console) in one process, on the tiny model."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.bot.conftest import USER, free_port, wait_healthy
from tests.fakes.telegram_api import TOKEN

RUN_TIMEOUT_S = 300  # the worker imports torch and loads the model on a busy 2-core box


def write_config(folder: Path, model: Path, telegram_url: str = "") -> Path:
    """The tiny model, 64×64 in 4 steps, one CPU worker on a free port; JSON values are TOML."""
    sections = {
        "models": {"base": str(model)},
        "generation": {"width": 64, "height": 64, "steps": 4, "sampler_name": "Euler a"},
        "engine": {"port": free_port(), "devices": ["cpu"]},
        "access": {"users": [USER]},
        "telegram": {"base_url": telegram_url} if telegram_url else {},
    }
    lines = [f"data_dir = {json.dumps(str(folder / 'data'))}"]
    for name, values in sections.items():
        lines += [f"[{name}]", *(f"{key} = {json.dumps(v)}" for key, v in values.items())]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "posterbot", "--config", str(config), "run"]


def environment(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTERBOT_", "TELEGRAM_"))}
    return env | ({"TELEGRAM_BOT_TOKEN": token} if token else {})


def chat(command: list[str], script: str) -> subprocess.CompletedProcess:
    """The terminal chat of `command` with `script` typed in, without a Telegram token."""
    return subprocess.run(
        command,
        input=script,
        capture_output=True,
        text=True,
        env=environment(None),
        timeout=RUN_TIMEOUT_S,
    )


def assert_only_the_chat_on_screen(result: subprocess.CompletedProcess, data: Path) -> None:
    """No log line, progress bar or traceback between the chat's lines: they are in the log."""
    screen = result.stdout + result.stderr
    for noise in ("INFO", "WARNING", "aiohttp", "Traceback", "it/s]", "Loading", "worker"):
        assert noise not in screen, f"{noise!r} on screen"
    log = (data / "logs" / "posterbot.log").read_text("utf-8")
    assert "aiohttp.access" in log and "ready on cpu" in log  # the service's and workers' lines


def test_run_without_a_token_chats_in_the_terminal_through_its_own_engine(tiny_model, tmp_path):
    config = write_config(tmp_path, tiny_model)
    # a request; then "1" picks the first candidate and "1" presses its first button, HD
    script = "达达骑士在雪地里送快递\n1\n1\n"
    result = chat(run_command(config), script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "没有设置 TELEGRAM_BOT_TOKEN" in result.stdout
    assert_only_the_chat_on_screen(result, tmp_path / "data")
    assert "[1] 1  [2] 2  [3] 3  [4] 4" in result.stdout  # the candidates' buttons as choices
    printed = [Path(p) for p in re.findall(r"(/\S+\.png)$", result.stdout, re.MULTILINE)]
    assert len(printed) == 6  # 4 candidates, then the HD poster as photo and as file
    assert all(path.is_file() for path in printed)
    candidate, poster = (Image.open(io.BytesIO(p.read_bytes())).size for p in printed[::5])
    assert poster[0] > candidate[0] and poster[1] > candidate[1]
    assert printed[0].name.split("-")[-1] == printed[5].name.split("-")[-1]  # the same seed


async def test_run_with_a_token_answers_a_private_request_in_telegram(
    tiny_model, tmp_path, telegram
):
    config = write_config(tmp_path, tiny_model, telegram.base_url)
    process = subprocess.Popen(run_command(config), env=environment(TOKEN))
    try:
        telegram.send_text(USER, "达达骑士在雪地里送快递")
        album = await telegram.wait_for(
            lambda: telegram.sent("sendMediaGroup", USER), timeout=RUN_TIMEOUT_S
        )
        assert len(album) == 1
        assert "收到" in telegram.texts(USER)[0]
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(process.wait, 60)
    assert code == 0  # bot, engine and its worker stopped cleanly


def console_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "posterbot", "--config", str(config), "console"]


def test_console_alone_starts_its_engine_and_uses_a_running_one(tiny_model, tmp_path):
    config = write_config(tmp_path, tiny_model)
    alone = chat(console_command(config), "达达骑士在雪地里送快递\n")
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert "✅ 完成" in alone.stdout
    assert_only_the_chat_on_screen(alone, tmp_path / "data")
    log = tmp_path / "data" / "logs" / "posterbot.log"
    assert log.read_text("utf-8").count("started worker") == 1
    data = tmp_path / "data"
    private = [data / "bot.db", data / "engine.db", log, *(data / "console").glob("*.png")]
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in private)  # the service's only
    folders = [data, data / "outputs", *(p for p in (data / "outputs").rglob("*") if p.is_dir())]
    assert len(folders) >= 3 and all(p.stat().st_mode & 0o777 == 0o700 for p in folders)

    engine = subprocess.Popen(
        [sys.executable, "-m", "posterbot", "--config", str(config), "engine"],
        env=environment(None),
        stderr=subprocess.DEVNULL,
    )
    try:
        port = int(re.search(r"port = (\d+)", config.read_text())[1])
        asyncio.run(wait_healthy(f"http://127.0.0.1:{port}", engine))
        started = log.read_text("utf-8").count("started worker")
        beside = chat(console_command(config), "达达骑士在雪地里送快递\n")
    finally:
        engine.terminate()
        engine.wait(timeout=60)
    assert beside.returncode == 0, beside.stderr[-3000:]
    assert "✅ 完成" in beside.stdout
    assert log.read_text("utf-8").count("started worker") == started  # no second engine


def test_console_against_an_engine_elsewhere_says_how_to_start_it(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[bot]\nengine_url = "http://127.0.0.1:9"\n')  # nothing listens there
    result = subprocess.run(
        console_command(config),
        input="",
        capture_output=True,
        text=True,
        env=environment(None),
        timeout=60,
    )
    assert result.returncode != 0
    assert "连不上" in result.stderr and "posterbot engine" in result.stderr
    assert "Traceback" not in result.stderr
