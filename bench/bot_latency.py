"""Bot latency: acknowledgement time and the bot's overhead per job beyond engine time.

N simulated private chats (default 200) each send one poster request at once to a real bot
(real Application, polling a fake Bot API on 127.0.0.1) backed by the real engine service on
the tiny offline model (1 image, 1 step, 64x64, so engine time is small but real). Prints:
- acknowledgement latency p50/p99: user message -> first bot message in that chat
- overhead per job: (message -> candidates delivered) - (engine created -> finished), p50/p99,
  and its ratio to the whole wait.

    .venv/bin/python bench/bot_latency.py [--chats 200]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.app import build_application, running
from engine.client import EngineClient
from engine.tiny import write_demo_model
from posterbot.config import AccessConfig, BotConfig, TelegramConfig, load_config
from tests.bot.conftest import free_port, wait_healthy
from tests.fakes.telegram_api import TOKEN, FakeTelegram

FIRST_USER = 10_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, seconds: list[float], suffix: str = "") -> None:
    p50, p99 = percentile(seconds, 0.5) * 1000, percentile(seconds, 0.99) * 1000
    print(f"{name}  p50 {p50:7.0f} ms   p99 {p99:7.0f} ms{suffix}")


async def main(chats: int) -> None:
    import subprocess

    folder = Path(tempfile.mkdtemp(prefix="bot-latency-"))
    model = write_demo_model(folder / "tiny")
    port = free_port()
    config_path = folder / "config.toml"
    config_path.write_text(
        f'data_dir = "{folder / "data"}"\n[models]\nbase = "{model}"\n'
        '[generation]\nwidth = 64\nheight = 64\nsteps = 1\nsampler = "Euler a"\n'
        f'[engine]\nport = {port}\ndevices = ["cpu"]\nmax_queue = {chats * 2}\nmax_batch = 8\n'
    )
    engine_process = subprocess.Popen(
        [sys.executable, "-m", "posterbot", "--config", str(config_path), "engine"],
        stderr=subprocess.DEVNULL,
    )
    telegram = await FakeTelegram().start()
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, engine_process)
        users = list(range(FIRST_USER, FIRST_USER + chats))
        config = dataclasses.replace(
            load_config(config_path, environ={}),
            data_dir=folder / "bot",
            telegram=TelegramConfig(
                base_url=telegram.base_url, base_file_url=telegram.base_file_url
            ),
            access=AccessConfig(users=users),
            bot=BotConfig(engine_url=url, default_count=1),
        )
        application = build_application(config, TOKEN)
        async with running(application):
            sent_at = {}
            for user in users:
                telegram.send_text(user, "达达骑士在雪地里送快递")
                sent_at[user] = time.monotonic()
            await telegram.wait_for(lambda: len(telegram.sent("sendPhoto")) >= chats, timeout=3600)
            store = application.bot_data["conversation"].store
            async with EngineClient(url) as engine:
                engine_s = {}
                for user in users:
                    (record,) = store.recent_jobs(user, 1)
                    job = await engine.job(record.job_id)
                    engine_s[user] = job["finished_at"] - job["created_at"]
        acks, overheads, waits = [], [], []
        for user in users:
            first = min(c.at for c in telegram.calls if c.params.get("chat_id") == user)
            delivered = min(c.at for c in telegram.sent("sendPhoto", user))
            acks.append(first - sent_at[user])
            waits.append(delivered - sent_at[user])
            overheads.append(waits[-1] - engine_s[user])
        print(f"chats: {chats}")
        report("ack latency ", acks)
        print(f"engine time   p50 {statistics.median(engine_s.values()):7.2f} s")
        report("bot overhead", overheads, " per job")
        print(f"overhead / total wait: {sum(overheads) / sum(waits):.3f}")
    finally:
        await telegram.stop()
        engine_process.terminate()
        engine_process.wait(timeout=60)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=200)
    asyncio.run(main(parser.parse_args().chats))
