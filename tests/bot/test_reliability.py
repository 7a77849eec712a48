"""Flood limits and restarts never lose a result, and never deliver one twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

from tests.bot.conftest import USER
from tests.fakes.telegram_api import TOKEN


async def test_a_429_is_waited_out_and_the_candidates_still_arrive(bot, telegram):
    telegram.fail_next("sendMediaGroup", retry_after=1)
    telegram.send_text(USER, "达达骑士在雪地里送快递")
    album = await telegram.wait_for(lambda: telegram.sent("sendMediaGroup", USER))
    refused = [c for c in telegram.calls if c.method == "sendMediaGroup" and not c.ok]
    assert len(refused) == 1 and len(album) == 1
    assert album[0].at - refused[0].at >= 1.0  # retry_after honoured


def write_config(config, path) -> None:
    path.write_text(
        f"""data_dir = "{config.data_dir}"
[generation]
width = 64
height = 64
steps = 4
sampler_name = "Euler a"
[telegram]
base_url = "{config.telegram.base_url}"
base_file_url = "{config.telegram.base_file_url}"
[access]
users = [{USER}]
[bot]
engine_url = "{config.bot.engine_url}"
"""
    )


def start_bot(config_path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTERBOT_")}
    env["TELEGRAM_BOT_TOKEN"] = TOKEN
    command = [sys.executable, "-m", "posterbot", "--config", str(config_path), "bot"]
    return subprocess.Popen(command, env=env)


async def test_a_bot_killed_mid_job_delivers_the_result_once_after_restart(
    bot_config, telegram, tmp_path
):
    config_path = tmp_path / "bot.toml"
    write_config(bot_config, config_path)
    first = start_bot(config_path)
    try:
        # Many steps keep the job running well past the acknowledgement, so the kill lands
        # mid-job however fast the machine is.
        telegram.send_text(USER, "达达骑士在雪地里送快递 --steps 50")
        await telegram.wait_for(lambda: telegram.texts(USER))  # acknowledged: the job is queued
        assert "收到" in telegram.texts(USER)[0]  # the acknowledgement, not a refusal
        # Its first progress edit: the bot has kept the acknowledgement's id (a bot killed
        # before that acknowledges again after its restart, by design).
        await telegram.wait_for(lambda: telegram.sent("editMessageText", USER))
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert not telegram.sent("sendMediaGroup")
        second = start_bot(config_path)
        try:
            await telegram.wait_for(lambda: telegram.sent("sendMediaGroup", USER), timeout=90)
            await asyncio.sleep(2)  # time for a duplicate to show up, if there were one
            assert len(telegram.sent("sendMediaGroup", USER)) == 1
            assert len([t for t in telegram.texts(USER) if "收到" in t]) == 1  # not re-submitted
        finally:
            second.terminate()
            second.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()


async def test_a_job_saved_before_its_acknowledgement_gets_a_fresh_status_message(
    bot_config, telegram
):
    from bot.app import build_application, running
    from bot.replies import Place
    from bot.store import JobRecord, Store
    from engine.service.client import EngineClient

    # 1. what a bot that died between saving a job and acknowledging it leaves in bot.db
    async with EngineClient(bot_config.bot.engine_url) as engine:
        job = await engine.submit({"prompt": "a rider", "batch_size": 2}, user=f"tg:{USER}")
    record = JobRecord(job["id"], USER, Place(USER), "candidates", "骑士", job["params"], "zh")
    record.summary = "收到：骑士"
    Store(bot_config.data_dir / "bot.db").save_job(record)
    # 2. the restarted bot acknowledges it anew and edits that message, not message 0
    async with running(build_application(bot_config, TOKEN)):
        await telegram.wait_for(lambda: telegram.sent("sendMediaGroup", USER))
        done = lambda: any("✅" in c.params["text"] for c in telegram.sent("editMessageText", USER))  # noqa: E731
        await telegram.wait_for(done)  # the done line follows the pictures
    (status,) = [c for c in telegram.sent("sendMessage", USER) if "收到：骑士" in c.params["text"]]
    edits = telegram.sent("editMessageText", USER)
    assert edits and {c.params["message_id"] for c in edits} == {status.result["message_id"]}
    assert "✅" in edits[-1].params["text"]
