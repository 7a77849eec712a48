"""`posterbot doctor`: one screen that says, line by line, whether this host can run posterbot
and what to change when not — in the admin's language (`posterbot/doctor.toml`).

Each check is a small function that yields `Finding`s (ok / warn / fail, a text, a fix). The
checks read files and ask services; they never load a model (a checkpoint's safetensors header
says what it is). Engine packages are imported inside the checks, so a bot-only host without
torch gets its answer too. The exit code is 1 when anything failed, for scripts; `--json` prints
the findings as data.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from posterbot.config import EXAMPLE_CONFIG, Config, config_source, engine_url

TEXTS = tomllib.loads(Path(__file__).with_name("doctor.toml").read_text(encoding="utf-8"))
MARKS = {"ok": "✅", "warn": "⚠️ ", "fail": "❌"}
MIN_FREE_DISK = 10 * 2**30  # a checkpoint is 2–7 GB, a training run writes a LoRA per epoch
MIN_FREE_VRAM = 6 * 2**30  # SD 1.5 at 512×768 with hires fix; SDXL wants more
PROBE_TIMEOUT_S = 5.0  # services on this machine or the LAN answer at once
POSTER_SAMPLE = "圣诞快乐，达达送福到家！"  # what the bundled font must draw


@dataclass(frozen=True)
class Finding:
    check: str  # what was looked at: "torch", "model", "lora:dada" ...
    status: str  # ok | warn | fail
    text: str
    fix: str = ""


class Doctor:
    """The findings of one run, worded in `language`."""

    def __init__(
        self, config: Config, language: str, environ: dict[str, str], config_path: str | None
    ) -> None:
        self.config = config
        self.config_path = config_path  # --config, if given
        self.language = language
        self.environ = environ
        self.findings: list[Finding] = []

    def say(self, check: str, status: str, key: str, fix: str = "", **values: Any) -> None:
        texts = TEXTS[self.language]
        text = texts[key].format(**values)
        fix_text = texts[fix].format(**values) if fix else ""
        self.findings.append(Finding(check, status, text, fix_text))


def register(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser(
        "doctor", help="check this host: models, GPU, fonts, services", description=__doc__
    )
    doctor.add_argument("--json", action="store_true", help="print the findings as JSON")
    doctor.add_argument("--lang", choices=sorted(TEXTS), default="zh", help="language (zh)")
    doctor.set_defaults(handler=doctor_command)


def doctor_command(args: argparse.Namespace, config: Config) -> int:
    """Check everything posterbot needs here; exit 1 when something fails."""
    doctor = diagnose(config, args.lang, dict(os.environ), args.config)
    if args.json:
        print(json.dumps([asdict(f) for f in doctor.findings], ensure_ascii=False, indent=2))
    else:
        print(render(doctor))
    return 1 if any(f.status == "fail" for f in doctor.findings) else 0


def diagnose(
    config: Config, language: str, environ: dict[str, str], config_path: str | None = None
) -> Doctor:
    doctor = Doctor(config, language, environ, config_path)
    for check in LOCAL_CHECKS:
        check(doctor)
    asyncio.run(check_services(doctor))
    return doctor


def render(doctor: Doctor) -> str:
    texts = TEXTS[doctor.language]
    lines = [texts["title"]]
    for finding in doctor.findings:
        line = f"{MARKS[finding.status]} {finding.text}"
        lines.append(line + (f"\n     → {finding.fix}" if finding.fix else ""))
    failed = sum(f.status == "fail" for f in doctor.findings)
    warned = sum(f.status == "warn" for f in doctor.findings)
    lines.append(texts["summary"].format(failed=failed, warned=warned))
    return "\n".join(lines)


# --- this host ----------------------------------------------------------------------------------


def check_config(doctor: Doctor) -> None:
    source = config_source(doctor.config_path, doctor.environ)
    if source == EXAMPLE_CONFIG:
        doctor.say("config", "warn", "config_example", "fix_config_example")
    else:
        doctor.say("config", "ok", "config_file", path=source)


def check_python(doctor: Doctor) -> None:
    version = platform.python_version()
    ok = sys.version_info >= (3, 11)
    doctor.say(
        "python", "ok" if ok else "fail", "python", "" if ok else "fix_python", version=version
    )


def check_torch(doctor: Doctor) -> None:
    try:
        import torch
    except ImportError:
        doctor.say("torch", "warn", "torch_missing", "fix_torch_missing")
        return
    cuda = torch.version.cuda or "-"
    doctor.say("torch", "ok", "torch", version=torch.__version__, cuda=cuda)
    if not torch.cuda.is_available():
        doctor.say("gpu", "warn", "gpu_none", "fix_gpu_none")
        return
    for index in range(torch.cuda.device_count()):
        check_gpu(doctor, torch, index)


def check_gpu(doctor: Doctor, torch: Any, index: int) -> None:
    """Name, free memory, and whether fp16, bf16 and PyTorch's SDPA attention run on it."""
    device = torch.device(f"cuda:{index}")
    free, total = torch.cuda.mem_get_info(device)
    works = {}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        try:
            q = torch.randn(1, 2, 16, 8, device=device, dtype=dtype)
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
            works[name] = True
        except RuntimeError:
            works[name] = False
    status = "ok" if works["fp16"] and free >= MIN_FREE_VRAM else "warn"
    doctor.say(
        f"gpu:{index}",
        status,
        "gpu",
        "" if status == "ok" else "fix_gpu",
        index=index,
        name=torch.cuda.get_device_name(device),
        free=f"{free / 2**30:.1f}",
        total=f"{total / 2**30:.1f}",
        fp16="✓" if works["fp16"] else "✗",
        bf16="✓" if works["bf16"] else "✗",
    )


def check_devices(doctor: Doctor) -> None:
    from engine.service.devices import visible_gpu_count, worker_devices

    visible = visible_gpu_count(doctor.environ)
    for device in worker_devices(doctor.config.engine.devices, visible):
        index = device.partition(":")[2]
        if device.startswith("cuda") and int(index or 0) >= visible:
            doctor.say("devices", "fail", "device_missing", "fix_devices", device=device, n=visible)
            return
    doctor.say("devices", "ok", "devices", devices=", ".join(doctor.config.engine.devices))


def check_models(doctor: Doctor) -> None:
    """The base model, the VAE, each IP's LoRA, the hires upscaler: present and readable."""
    try:
        from engine.diffusion.hires import upscaler_names
        from engine.diffusion.registry import Registry
    except ImportError:
        return  # a bot-only host: check_torch said so
    registry = Registry(doctor.config)
    try:
        ref = registry.checkpoint()
    except ValueError as exc:
        doctor.say(
            "model", "fail", "model_bad", "fix_model", name=doctor.config.models.base, why=exc
        )
    else:
        check_checkpoint(doctor, ref)
    try:
        if (vae := registry.vae()) is not None:
            doctor.say("vae", "ok", "vae", name=vae.name)
    except ValueError as exc:
        doctor.say("vae", "fail", "vae_bad", "fix_vae", why=exc)
    loras = registry.loras()
    for ip in doctor.config.ips:
        if not ip.lora:
            doctor.say(f"lora:{ip.name}", "warn", "lora_none", "fix_lora", ip=ip.name, lora="-")
        elif ip.lora in loras:
            check_lora(doctor, ip.name, loras[ip.lora])
        else:
            doctor.say(
                f"lora:{ip.name}", "warn", "lora_missing", "fix_lora", ip=ip.name, lora=ip.lora
            )
    upscaler = doctor.config.generation.hr_upscaler
    if upscaler not in upscaler_names(registry.upscalers()):  # what the worker can run
        doctor.say("upscaler", "fail", "upscaler_missing", "fix_upscaler", name=upscaler)


def check_checkpoint(doctor: Doctor, ref: Any) -> None:
    if ref.is_demo:
        doctor.say("model", "warn", "model_demo", "fix_model_demo")
        return
    if ref.kind == "hub":
        doctor.say("model", "warn", "model_hub", "fix_model_hub", name=ref.location)
        return
    if ref.kind == "folder":
        index = Path(ref.location) / "model_index.json"
        try:
            kind = json.loads(index.read_text(encoding="utf-8"))["_class_name"]
        except (OSError, ValueError, KeyError) as exc:
            doctor.say("model", "fail", "model_bad", "fix_model", name=ref.name, why=exc)
            return
        doctor.say("model", "ok", "model_folder", name=ref.name, kind=kind)
        return
    from engine.diffusion import single_file

    path = Path(ref.location)
    given = {"vae"} if doctor.config.models.vae else set()
    try:  # what loading checks first, from the header alone
        tensors = single_file.read_header(path)
        kind = single_file.model_type(path, tensors)
        single_file.check_components(path, kind, tensors, given)
    except ValueError as exc:
        why = str(exc).removeprefix(f"model: {path.name}: ")
        doctor.say("model", "fail", "model_bad", "fix_model", name=ref.name, why=why)
        return
    size = path.stat().st_size / 2**30
    family = single_file.DESCRIPTIONS[kind]
    doctor.say("model", "ok", "model_file", name=ref.name, kind=family, size=f"{size:.1f}")


def check_lora(doctor: Doctor, ip: str, path: Path) -> None:
    from engine.diffusion.single_file import read_header

    try:
        keys = read_header(path)
        why = "" if any("lora" in key for key in keys) else "no LoRA keys"
    except ValueError as exc:
        why = str(exc).removeprefix(f"model: {path.name}: ")
    if why:
        doctor.say(f"lora:{ip}", "fail", "lora_bad", "fix_lora_bad", ip=ip, name=path.name, why=why)
    else:
        doctor.say(f"lora:{ip}", "ok", "lora", ip=ip, name=path.stem)


def check_fonts(doctor: Doctor) -> None:
    try:
        from poster import fonts
    except ImportError:
        return  # a bot-only host lays no posters out
    try:
        missing = fonts.missing(POSTER_SAMPLE, fonts.family_path(fonts.DEFAULT_FAMILY))
    except (OSError, ValueError) as exc:
        doctor.say(
            "fonts", "fail", "font_bad", "fix_font_bundled", name=fonts.DEFAULT_FAMILY, why=exc
        )
        return
    if missing:
        why = "".join(missing)
        doctor.say(
            "fonts", "fail", "font_bad", "fix_font_bundled", name=fonts.DEFAULT_FAMILY, why=why
        )
        return
    doctor.say("fonts", "ok", "fonts", name=fonts.DEFAULT_FAMILY)
    for ip in doctor.config.ips:
        for family in ip.brand.fonts:
            try:
                fonts.family_path(family)
            except ValueError:
                doctor.say(
                    f"font:{ip.name}", "fail", "font_missing", "fix_font", ip=ip.name, name=family
                )


def check_data_dir(doctor: Doctor) -> None:
    folder = doctor.config.data_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
            pass
    except OSError as exc:
        doctor.say(
            "data_dir", "fail", "data_dir_bad", "fix_data_dir", path=folder, why=exc.strerror
        )
        return
    free = shutil.disk_usage(folder).free
    status = "ok" if free >= MIN_FREE_DISK else "warn"
    fix = "" if status == "ok" else "fix_disk"
    doctor.say("data_dir", status, "data_dir", fix, path=folder, free=f"{free / 2**30:.1f}")


def check_queue(doctor: Doctor) -> None:
    path = doctor.config.data_dir / "engine.db"
    if not path.exists():
        doctor.say("queue", "ok", "queue_new", path=path)
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=PROBE_TIMEOUT_S) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.Error as exc:
        verdict = str(exc)
    if verdict != "ok":
        doctor.say("queue", "fail", "queue_bad", "fix_queue", path=path, why=verdict)
        return
    doctor.say("queue", "ok", "queue", path=path)


def check_access(doctor: Doctor) -> None:
    access = doctor.config.access
    if not (access.owners or access.admins or access.users or access.groups):
        doctor.say("access", "warn", "access_empty", "fix_access")
    else:
        doctor.say("access", "ok", "access", owners=len(access.owners), users=len(access.users))


LOCAL_CHECKS: list[Callable[[Doctor], None]] = [
    check_config,
    check_python,
    check_torch,
    check_devices,
    check_models,
    check_fonts,
    check_data_dir,
    check_queue,
    check_access,
]


# --- services -----------------------------------------------------------------------------------


async def check_services(doctor: Doctor) -> None:
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await check_engine(doctor, http)
        await check_telegram(doctor, http)
        await check_llm(doctor, http)


async def check_engine(doctor: Doctor, http: Any) -> None:
    """The engine the bot talks to answers, and takes our token. Without [bot] engine_url the
    engine is the one `posterbot run` starts itself: not running yet is fine."""
    import aiohttp

    config = doctor.config
    url = engine_url(config)
    token = doctor.environ.get("POSTERBOT_ENGINE_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with http.get(f"{url}/v1/models", headers=headers) as response:
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        if config.bot.engine_url:
            doctor.say("engine", "fail", "engine_down", "fix_engine_down", url=url)
        else:
            doctor.say("engine", "ok", "engine_not_started", url=url)
        return
    if status == 401:
        doctor.say("engine", "fail", "engine_token", "fix_engine_token", url=url)
    elif status != 200:
        doctor.say("engine", "fail", "engine_status", "fix_engine_down", url=url, status=status)
    else:
        doctor.say("engine", "ok", "engine", url=url)


async def check_telegram(doctor: Doctor, http: Any) -> None:
    import aiohttp

    token = doctor.environ.get("TELEGRAM_BOT_TOKEN")
    if not token:
        doctor.say("telegram", "warn", "telegram_none", "fix_telegram_none")
        return
    try:
        async with http.post(f"{doctor.config.telegram.base_url}{token}/getMe") as response:
            body = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        doctor.say("telegram", "fail", "telegram_down", "fix_telegram_down")
        return
    if not body.get("ok"):  # 401 Unauthorized (a wrong token) or 404 (a malformed one)
        doctor.say("telegram", "fail", "telegram_token", "fix_telegram_token")
        return
    doctor.say("telegram", "ok", "telegram", name=body["result"].get("username", "?"))


async def check_llm(doctor: Doctor, http: Any) -> None:
    import aiohttp

    llm = doctor.config.llm
    if not llm.enabled:
        return
    key = doctor.environ.get("POSTERBOT_LLM_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = llm.base_url.rstrip("/") + "/models"
    try:
        async with http.get(url, headers=headers) as response:
            status = response.status
    except (aiohttp.ClientError, TimeoutError):
        doctor.say("llm", "fail", "llm_down", "fix_llm", url=llm.base_url)
        return
    if status in (401, 403):
        doctor.say("llm", "fail", "llm_key", "fix_llm", url=llm.base_url)
    else:  # some compatible servers have no /models; any other answer means it is there
        doctor.say("llm", "ok", "llm", url=llm.base_url, model=llm.model)
