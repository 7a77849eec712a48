"""Flood limits with lanes: a user's answer never waits behind other chats' progress edits,
groups keep their per-minute limit, and a 429 pauses everything for its `retry_after`."""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest
from telegram.error import RetryAfter

from bot.ratelimit import Lane, LaneRateLimiter
from bot.replies import Place, Reply
from bot.status import StatusMessage
from bot.store import JobRecord


class Recorder:
    """Stands in for the HTTP call behind a bot method: records the order requests went out."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.times: dict[str, float] = {}

    def call(self, name: str, fail_with: list[Exception] | None = None):
        async def callback():
            if fail_with:
                raise fail_with.pop(0)
            self.sent.append(name)
            self.times[name] = time.monotonic()
            return True

        return callback


async def request(limiter, recorder, name, chat_id=1, endpoint="sendMessage", lane=None, fail=None):
    callback = recorder.call(name, fail)
    data = {"chat_id": chat_id} if chat_id is not None else {}
    return await limiter.process_request(callback, (), {}, endpoint, data, lane)


async def until(condition, timeout: float = 5.0) -> None:
    """Wait (without assuming how fast this machine is) until `condition()` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


@pytest.fixture
async def limiter():
    limiter = LaneRateLimiter(overall_per_second=20, group_per_minute=60, max_retries=2)
    await limiter.initialize()
    yield limiter
    await limiter.shutdown()


@pytest.fixture
async def slow():
    """2 messages a second: a burst of 2, then one slot every 0.5 s, time enough for a test to
    line requests up before the next slot even on a busy machine."""
    limiter = LaneRateLimiter(overall_per_second=2, max_retries=2)
    await limiter.initialize()
    yield limiter
    await limiter.shutdown()


async def test_an_answer_goes_before_progress_edits_that_were_waiting(slow):
    recorder = Recorder()
    edits = [
        asyncio.create_task(
            request(slow, recorder, f"edit{i}", chat_id=100 + i, lane=Lane.PROGRESS)
        )
        for i in range(5)  # 2 go at once (the burst), 3 wait
    ]
    await until(lambda: len(recorder.sent) == 2 and slow.waiting[Lane.PROGRESS] == 3)
    answer = asyncio.create_task(request(slow, recorder, "ack", chat_id=999))
    photo = asyncio.create_task(request(slow, recorder, "photo", 998, endpoint="sendPhoto"))
    await asyncio.gather(answer, photo, *edits)
    assert recorder.sent[2:4] == ["ack", "photo"]  # the next free slots, ahead of the edits
    assert recorder.sent[4:] == ["edit2", "edit3", "edit4"]  # then the edits, in order


async def test_a_group_keeps_its_per_minute_limit_without_holding_up_other_chats(limiter):
    recorder = Recorder()
    group = [
        asyncio.create_task(request(limiter, recorder, f"group{i}", chat_id=-100123))
        for i in range(4)  # a burst of 3, then one a second (60 a minute here)
    ]
    await asyncio.sleep(0.01)
    private = await request(limiter, recorder, "private", chat_id=5)
    await asyncio.gather(*group)
    assert private is True
    assert recorder.sent.index("private") < recorder.sent.index("group3")
    assert recorder.times["group3"] - recorder.times["group0"] >= 0.9


async def test_a_429_pauses_every_lane_and_the_request_is_retried(limiter):
    recorder = Recorder()
    flood = RetryAfter(datetime.timedelta(seconds=1))
    first = asyncio.create_task(request(limiter, recorder, "album", fail=[flood]))
    await until(lambda: limiter._paused_until > 0)  # the 429 has come back: the pause is on
    started = time.monotonic()
    await request(limiter, recorder, "other chat", chat_id=2)
    await first
    assert recorder.sent == ["album", "other chat"]  # the retried request kept its place
    assert recorder.times["other chat"] - started >= 0.9


async def test_a_request_still_flooded_after_its_retries_fails(limiter):
    recorder = Recorder()
    floods = [RetryAfter(datetime.timedelta(seconds=0)) for _ in range(3)]
    with pytest.raises(RetryAfter):
        await request(limiter, recorder, "photo", fail=floods)
    assert recorder.sent == []


async def test_calls_without_a_chat_are_not_queued(slow):
    recorder = Recorder()
    waiting = [
        asyncio.create_task(request(slow, recorder, f"m{i}", chat_id=i + 1)) for i in range(5)
    ]
    await until(lambda: slow.waiting[Lane.ANSWER] == 3)
    assert await request(slow, recorder, "getUpdates", chat_id=None, endpoint="getUpdates")
    assert recorder.sent == ["m0", "m1", "getUpdates"]  # not behind the 3 still waiting
    await asyncio.gather(*waiting)


async def test_a_caller_that_gave_up_does_not_take_a_slot(slow):
    recorder = Recorder()
    await asyncio.gather(*(request(slow, recorder, f"b{i}", chat_id=i + 1) for i in range(2)))
    gone = asyncio.create_task(request(slow, recorder, "gone", chat_id=50))
    await until(lambda: slow.waiting[Lane.ANSWER] == 1)
    gone.cancel()
    assert await request(slow, recorder, "next", chat_id=51)
    assert recorder.sent == ["b0", "b1", "next"]


class SlowOutbox:
    """An outbox whose edits take as long as the test says (a flood-limited chat)."""

    def __init__(self) -> None:
        self.edits: list[Reply] = []
        self.release = asyncio.Event()

    async def edit(self, place, message_id, reply):
        await self.release.wait()
        self.edits.append(reply)


def status_message(outbox) -> StatusMessage:
    record = JobRecord("j1", 7, Place(7), "candidates", "达达", {}, "zh", "S", 3)
    return StatusMessage(outbox, record, interval_s=0, shown="queued")


async def test_progress_never_holds_up_the_job_and_the_newest_line_wins():
    outbox = SlowOutbox()
    status = status_message(outbox)
    for step in range(1, 6):  # the follower goes on while the first edit is stuck
        await asyncio.wait_for(status.show(f"step {step}"), timeout=1)
    outbox.release.set()
    await asyncio.sleep(0.05)
    assert [r.text for r in outbox.edits] == ["S\n\nstep 1", "S\n\nstep 5"]
    assert all(r.progress for r in outbox.edits)


async def test_the_final_line_replaces_pending_progress_and_is_not_progress():
    outbox = SlowOutbox()
    status = status_message(outbox)
    await status.show("step 1")
    await status.show("step 2")
    outbox.release.set()
    await status.show("done", force=True)
    await asyncio.sleep(0.05)
    assert outbox.edits[-1].text == "S\n\ndone" and not outbox.edits[-1].progress
    assert "S\n\nstep 2" not in [r.text for r in outbox.edits]
