"""`posterbot doctor`: a healthy tiny setup passes; each broken setup gets its line, in the
admin's language, with a fix, and a non-zero exit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from engine.diffusion.registry import DEMO_MARKER
from tests.bot.conftest import free_port
from tests.fakes.telegram_api import TOKEN, FakeTelegram


def write_config(folder: Path, data_dir: Path | None = None, tail: str = "", **sections) -> Path:
    """A config whose base model and LoRA are the tiny ones; `sections` replace tables, `tail`
    is added after the IP (its [ips.brand])."""
    tables = {
        "models": {"base": str(folder / "model")},
        "engine": {"port": free_port(), "devices": ["cpu"]},
        "access": {"owners": [1]},
        **sections,
    }
    lines = [f"data_dir = {json.dumps(str(data_dir or folder / 'data'))}"]
    for name, values in tables.items():
        lines += [f"[{name}]", *(f"{key} = {json.dumps(v)}" for key, v in values.items())]
    lines += ["[[ips]]", 'name = "dada"', 'trigger = "dadaknight"', 'lora = "dada_lora"']
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n" + tail)
    return path


@pytest.fixture
def setup(tmp_path, tiny_model):
    """A working install: the tiny model as the base, a LoRA file for the IP."""
    shutil.copytree(tiny_model, tmp_path / "model")
    (tmp_path / "model" / DEMO_MARKER).unlink()  # as a real diffusers folder
    loras = tmp_path / "data" / "models" / "Lora"
    loras.mkdir(parents=True)
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": np.zeros((4, 4))}
    save_file({k: v.astype(np.float32) for k, v in lora.items()}, loras / "dada_lora.safetensors")
    return tmp_path


def doctor(config: Path, *flags: str, env: dict[str, str] | None = None):
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(config.parent), **(env or {})}
    command = [sys.executable, "-m", "posterbot", "--config", str(config), "doctor", *flags]
    result = subprocess.run(command, capture_output=True, text=True, env=environ, timeout=120)
    return result


def findings(result) -> dict[str, dict]:
    return {f["check"]: f for f in json.loads(result.stdout)}


def test_a_healthy_tiny_setup_passes_and_says_so_in_chinese(setup):
    result = doctor(write_config(setup))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\n❌" not in result.stdout and "结果：0 项需要处理" in result.stdout
    assert "IP dada 的 LoRA：dada_lora" in result.stdout
    assert "中文字体：Noto Sans SC" in result.stdout and "可写" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr

    english = findings(doctor(write_config(setup), "--json", "--lang", "en"))
    assert english["model"]["status"] == "ok" and "diffusers folder" in english["model"]["text"]
    assert english["telegram"]["status"] == "warn"  # no token: the console only
    assert english["engine"]["status"] == "ok"  # not started yet: `posterbot run` starts it


@pytest.mark.parametrize(
    ("case", "check", "text"),
    [
        ("missing model", "model", "底模 nope 用不了"),
        ("pickle model", "model", "pickle"),
        ("a file where the data folder should be", "data_dir", "不能写入"),
        ("unreachable engine", "engine", "连不上"),
        ("missing font", "font:dada", "品牌字体"),
        ("missing upscaler", "upscaler", "放大器"),
        ("a GPU that is not there", "devices", "cuda:3"),
    ],
)
def test_each_broken_setup_gets_its_line_with_a_fix_and_a_failing_exit(setup, case, check, text):
    options: dict = {}
    if case == "missing model":
        options["models"] = {"base": "nope"}
    elif case == "pickle model":
        (setup / "model.ckpt").write_bytes(b"\x80\x02}q\x00.")
        options["models"] = {"base": str(setup / "model.ckpt")}
    elif case == "a file where the data folder should be":
        (setup / "blocked").write_text("")
        options["data_dir"] = setup / "blocked" / "data"
    elif case == "unreachable engine":
        options["bot"] = {"engine_url": f"http://127.0.0.1:{free_port()}"}
    elif case == "missing font":
        options["tail"] = '[ips.brand]\nfonts = ["/nowhere/brand.ttf"]\n'
    elif case == "missing upscaler":
        options["generation"] = {"hr_upscaler": "4x-UltraSharp"}
    elif case == "a GPU that is not there":
        options["engine"] = {"port": free_port(), "devices": ["cuda:3"]}
    config = write_config(setup, **options)

    result = doctor(config, "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    found = findings(result)[check]
    assert found["status"] == "fail" and text in found["text"] and found["fix"]
    screen = doctor(config)
    assert screen.returncode == 1 and "❌ " in screen.stdout and "→ " in screen.stdout
    assert "Traceback" not in screen.stdout + screen.stderr


async def test_a_telegram_token_is_checked_with_getme(setup):
    import asyncio

    telegram = await FakeTelegram().start()
    try:
        config = write_config(setup, telegram={"base_url": telegram.base_url})
        good = await asyncio.to_thread(doctor, config, "--json", env={"TELEGRAM_BOT_TOKEN": TOKEN})
        bad = await asyncio.to_thread(
            doctor, config, "--json", env={"TELEGRAM_BOT_TOKEN": "123:revoked"}
        )
    finally:
        await telegram.stop()
    assert good.returncode == 0 and findings(good)["telegram"]["status"] == "ok"
    assert bad.returncode == 1
    refused = findings(bad)["telegram"]
    assert (
        refused["status"] == "fail" and "拒绝" in refused["text"] and "BotFather" in refused["fix"]
    )
    assert "123:revoked" not in bad.stdout  # the token is never printed


def test_a_single_file_checkpoint_is_read_from_its_header_and_a_missing_part_named(setup):
    from safetensors.numpy import load_file

    from tests.fakes.single_file import write_single_file

    whole = write_single_file(setup / "model", setup / "tinyAnime_v1.safetensors")
    result = findings(doctor(write_config(setup, models={"base": str(whole)}), "--json"))
    assert result["model"]["status"] == "ok" and "Stable Diffusion 1.x" in result["model"]["text"]

    tensors = load_file(whole)
    no_text_encoder = {k: v for k, v in tensors.items() if not k.startswith("cond_stage_model.")}
    save_file(no_text_encoder, setup / "broken.safetensors")
    config = write_config(setup, models={"base": str(setup / "broken.safetensors")})
    broken = doctor(config, "--json")
    assert broken.returncode == 1
    model = findings(broken)["model"]
    assert model["status"] == "fail" and "text encoder" in model["text"]
