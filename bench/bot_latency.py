"""Bot latency: acknowledgement time and the bot's overhead per job beyond engine time.

N simulated private chats (default 200) each send one poster request at once to a real bot
(real Application, polling a fake Bot API on 127.0.0.1) backed by the real engine service on
the tiny offline model (1 image, 1 step, 64x64, so engine time is small but real). Two rounds
against the same warm engine, each with fresh chats: python-telegram-bot's AIORateLimiter
(first come, first served: the baseline) and our LaneRateLimiter (answers, then results, then
progress edits). Prints for each:
- acknowledgement latency p50/p99: user message -> first bot message in that chat
- overhead per job: (message -> candidates delivered) - (engine created -> finished), p50/p99,
  and its ratio to the whole wait
and the ratios lanes / baseline (below 1 = faster).

    .venv/bin/python bench/bot_latency.py [--chats 200]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from telegram.ext import AIORateLimiter, BaseRateLimiter

from bot.app import RATE_LIMIT_RETRIES, build_application, running
from bot.ratelimit import LaneRateLimiter
from engine.diffusion.tiny import write_demo_model
from engine.service.client import EngineClient
from posterbot.config import AccessConfig, BotConfig, Config, TelegramConfig, load_config
from tests.bot.conftest import free_port, wait_healthy
from tests.fakes.telegram_api import TOKEN, FakeTelegram


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclasses.dataclass
class Round:
    acks: list[float]
    overheads: list[float]
    waits: list[float]
    engine_s: list[float]

    def figures(self) -> dict[str, float]:
        return {
            "ack p50": percentile(self.acks, 0.5),
            "ack p99": percentile(self.acks, 0.99),
            "overhead p50": percentile(self.overheads, 0.5),
            "overhead p99": percentile(self.overheads, 0.99),
        }

    def show(self, name: str) -> None:
        f = self.figures()
        print(
            f"{name:<9} ack p50 {f['ack p50']:6.2f} s  p99 {f['ack p99']:6.2f} s | "
            f"engine p50 {statistics.median(self.engine_s):6.2f} s | "
            f"overhead p50 {f['overhead p50']:6.2f} s  p99 {f['overhead p99']:6.2f} s | "
            f"overhead / wait {sum(self.overheads) / sum(self.waits):.3f}"
        )


async def one_round(
    config: Config, url: str, users: list[int], limiter: BaseRateLimiter, folder: Path
) -> Round:
    """Every user sends one request at the same moment; measured from the fake API's log."""
    telegram = await FakeTelegram().start()
    try:
        config = dataclasses.replace(
            config,
            data_dir=folder,
            telegram=TelegramConfig(
                base_url=telegram.base_url, base_file_url=telegram.base_file_url
            ),
            access=AccessConfig(users=users),
        )
        application = build_application(config, TOKEN, rate_limiter=limiter)
        async with running(application):
            sent_at = {}
            for user in users:
                telegram.send_text(user, "达达骑士在雪地里送快递")
                sent_at[user] = time.monotonic()
            done = lambda: len(telegram.sent("sendPhoto")) >= len(users)  # noqa: E731
            await telegram.wait_for(done, timeout=3600)
            store = application.bot_data["core"].store
            async with EngineClient(url) as engine:
                engine_s = {}
                for user in users:
                    (record,) = store.recent_jobs(user, 1)
                    job = await engine.job(record.job_id)
                    engine_s[user] = job["finished_at"] - job["created_at"]
    finally:
        await telegram.stop()
    result = Round([], [], [], list(engine_s.values()))
    for user in users:
        first = min(c.at for c in telegram.calls if c.params.get("chat_id") == user)
        delivered = min(c.at for c in telegram.sent("sendPhoto", user))
        result.acks.append(first - sent_at[user])
        result.waits.append(delivered - sent_at[user])
        result.overheads.append(result.waits[-1] - engine_s[user])
    return result


async def main(chats: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bot-latency-"))
    model = write_demo_model(folder / "tiny")
    port = free_port()
    config_path = folder / "config.toml"
    config_path.write_text(
        f'data_dir = "{folder / "data"}"\n[models]\nbase = "{model}"\n'
        '[generation]\nwidth = 64\nheight = 64\nsteps = 1\nsampler_name = "Euler a"\n'
        f'[engine]\nport = {port}\ndevices = ["cpu"]\nmax_queue = {chats * 2}\nmax_batch = 8\n'
    )
    engine_process = subprocess.Popen(
        [sys.executable, "-m", "posterbot", "--config", str(config_path), "engine"],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    config = dataclasses.replace(
        load_config(config_path, environ={}), bot=BotConfig(engine_url=url, default_count=1)
    )
    limiters = {
        "baseline": lambda: AIORateLimiter(max_retries=RATE_LIMIT_RETRIES),
        "lanes": lambda: LaneRateLimiter(max_retries=RATE_LIMIT_RETRIES),
    }
    try:
        await wait_healthy(url, engine_process)
        # A few chats first, not counted: the worker's first batch loads the model.
        await one_round(config, url, list(range(100, 105)), limiters["lanes"](), folder / "warm")
        rounds = {}
        for number, (name, make) in enumerate(limiters.items(), 1):
            users = list(range(number * 10_000, number * 10_000 + chats))
            rounds[name] = await one_round(config, url, users, make(), folder / name)
        print(f"chats: {chats}")
        for name, result in rounds.items():
            result.show(name)
        base, lanes = rounds["baseline"].figures(), rounds["lanes"].figures()
        print("ratio lanes / baseline: " + ", ".join(f"{k} {lanes[k] / base[k]:.2f}" for k in base))
    finally:
        engine_process.terminate()
        engine_process.wait(timeout=60)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=200)
    asyncio.run(main(parser.parse_args().chats))
