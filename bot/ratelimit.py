"""Telegram's flood limits with lanes: answers first, results next, progress edits last.

Telegram lets a bot send about 30 messages a second overall and 20 a minute into one group;
above that it answers 429 with `retry_after`. python-telegram-bot's AIORateLimiter keeps to
those limits first come, first served, so when many chats are busy a user's acknowledgement
waits behind other chats' progress edits. This limiter keeps the same limits but hands out each
free slot by lane:

- ANSWER: what answers a user's own action now (acknowledgements, command replies, keyboards);
- RESULT: what a job produced (photos, albums, PNG files);
- PROGRESS: progress edits, sent only with capacity nobody else wants.

Inside a lane, first come first served. A 429 pauses every lane for `retry_after` (Telegram's
wait applies to the whole bot) and the request keeps its place in line. Calls that name no chat
(getUpdates, answerCallbackQuery, getFile ...) are not limited, as in AIORateLimiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

log = logging.getLogger(__name__)

OVERALL_PER_SECOND = 30  # Telegram: about 30 messages per second for a bot
GROUP_PER_MINUTE = 20  # Telegram: 20 messages per minute into one group
RESULT_METHODS = frozenset({"sendPhoto", "sendMediaGroup", "sendDocument"})
MAX_GROUP_BUCKETS = 1024  # idle group buckets beyond this are forgotten (they are full again)


class Lane(IntEnum):
    ANSWER = 0
    RESULT = 1
    PROGRESS = 2


@dataclass
class Bucket:
    """A token bucket: `rate` tokens per second, at most `capacity` saved up."""

    rate: float
    capacity: float
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens, self.updated = self.capacity, time.monotonic()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def wait(self, now: float) -> float:
        """Seconds until a token is free (0 = now)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1

    def full(self, now: float) -> bool:
        self._refill(now)
        return self.tokens >= self.capacity


@dataclass(order=True)
class Waiter:
    lane: int
    number: int  # arrival order inside a lane; kept across a 429 retry
    group: int | str | None = field(compare=False, default=None)
    turn: asyncio.Future = field(compare=False, default=None)  # type: ignore[assignment]


class LaneRateLimiter(BaseRateLimiter[int]):
    """Pass `rate_limit_args=Lane.PROGRESS` (or another Lane) to a bot method to pick its lane;
    without it, sendPhoto/sendMediaGroup/sendDocument are RESULT and the rest ANSWER."""

    def __init__(
        self,
        overall_per_second: float = OVERALL_PER_SECOND,
        group_per_minute: float = GROUP_PER_MINUTE,
        max_retries: int = 5,
    ) -> None:
        # A full second's worth of burst overall; a group gets a few messages at once, then
        # one every 3 s, so a busy group never earns a 429.
        self._overall = Bucket(overall_per_second, max(1.0, overall_per_second))
        self._group_rate = group_per_minute / 60
        self._group_burst = max(1.0, min(3.0, group_per_minute))
        self._groups: dict[int | str, Bucket] = {}
        self._max_retries = max_retries
        self._waiting: list[Waiter] = []
        self._numbers = itertools.count()
        self._paused_until = 0.0
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task | None = None

    async def initialize(self) -> None:
        self._start()

    async def shutdown(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
            self._dispatcher = None
        for waiter in self._waiting:
            waiter.turn.cancel()
        self._waiting.clear()

    def _start(self) -> None:
        if self._dispatcher is None or self._dispatcher.done():
            self._wake = asyncio.Event()
            self._dispatcher = asyncio.create_task(self._dispatch(), name="telegram-lanes")

    @property
    def waiting(self) -> dict[Lane, int]:
        """How many requests wait in each lane (for logs and tests)."""
        return {lane: sum(w.lane == lane for w in self._waiting) for lane in Lane}

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        chat_id = data.get("chat_id")
        if chat_id is None:
            return await callback(*args, **kwargs)
        lane = Lane(rate_limit_args) if rate_limit_args is not None else self.lane_of(endpoint)
        group = self.group_of(chat_id)
        number = next(self._numbers)
        for attempt in range(self._max_retries + 1):
            await self._turn(Waiter(lane, number, group))
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                if attempt == self._max_retries:
                    raise
                wait = exc._retry_after.total_seconds() + 0.1
                log.info("flood limit: every lane waits %.1f s (%s)", wait, endpoint)
                self._paused_until = max(self._paused_until, time.monotonic() + wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    @staticmethod
    def lane_of(endpoint: str) -> Lane:
        return Lane.RESULT if endpoint in RESULT_METHODS else Lane.ANSWER

    @staticmethod
    def group_of(chat_id: Any) -> int | str | None:
        """Groups and channels (negative ids, @usernames) have their own per-minute limit."""
        with contextlib.suppress(ValueError, TypeError):
            chat_id = int(chat_id)
        if isinstance(chat_id, str) or chat_id < 0:
            return chat_id
        return None

    async def _turn(self, waiter: Waiter) -> None:
        """Wait until the dispatcher hands this request a slot."""
        self._start()
        waiter.turn = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._wake.set()
        await waiter.turn

    def _group(self, group: int | str) -> Bucket:
        if group not in self._groups:
            if len(self._groups) >= MAX_GROUP_BUCKETS:
                now = time.monotonic()
                self._groups = {k: b for k, b in self._groups.items() if not b.full(now)}
            self._groups[group] = Bucket(self._group_rate, self._group_burst)
        return self._groups[group]

    def _grant(self, now: float) -> float:
        """Give the best waiter a slot if one is free; else the seconds until one may be."""
        self._waiting = [w for w in self._waiting if not w.turn.done()]  # callers gone
        if not self._waiting:
            return float("inf")
        wait = max(self._paused_until - now, self._overall.wait(now))
        if wait > 0:
            return wait
        soonest = float("inf")
        for waiter in sorted(self._waiting):
            group_wait = self._group(waiter.group).wait(now) if waiter.group is not None else 0
            if group_wait == 0:
                self._overall.take(now)
                if waiter.group is not None:
                    self._group(waiter.group).take(now)
                self._waiting.remove(waiter)
                waiter.turn.set_result(None)
                return 0.0
            soonest = min(soonest, group_wait)
        return soonest  # everyone waiting is in a group that is at its limit

    async def _dispatch(self) -> None:
        while True:
            wait = self._grant(time.monotonic())
            if wait == 0:
                await asyncio.sleep(0)  # let the granted request go before the next grant
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), None if wait == float("inf") else wait)
