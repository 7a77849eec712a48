"""What every feature works with: config, bot.db, the engine client, the outbox, the follower,
and the few things each entry point does (language, access check, say, ask the engine, job key).

No Telegram here: the Telegram handlers and the terminal console are adapters that build
`Incoming`/`Press` values and hand them to the router (bot/router.py), which calls a feature.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import aiohttp

from bot.follower import Delivery, Follower
from bot.i18n import pick_language, split_text, t
from bot.refusals import refusal_text
from bot.replies import Incoming, Outbox, Place, Press, Reply, User, engine_user
from bot.roles import Role, Roles
from bot.store import JobRecord, Store
from engine.service.client import EngineBusy, EngineClient, EngineError, EngineUnavailable
from posterbot.config import Config, IPConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


class Core:
    def __init__(
        self,
        config: Config,
        store: Store,
        engine: EngineClient,
        outbox: Outbox,
        deliveries: dict[str, Delivery[Core]],
        http: aiohttp.ClientSession | None = None,
        origin: str = "",
    ) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.outbox = outbox
        self.http = http  # reused by the LLM step
        # Who is talking to the engine (e.g. `tg777000111` for a Telegram bot): message ids are
        # unique per bot and chat only, so job keys carry it; two bots or console sessions
        # sharing one engine never get each other's jobs back.
        self.origin = origin
        self.roles = Roles(config.access, store)
        self.follower = Follower(self, engine, store, outbox, config.telegram, deliveries)

    def language(self, user: User) -> str:
        return pick_language(self.store.user(user.id)["language"], user.language)

    def is_admin(self, user_id: int) -> bool:
        return self.roles.of(user_id) >= Role.ADMIN

    def over_limit(self, user_id: int) -> tuple[str, dict[str, Any]] | None:
        """Why this user may not start another job now (message key and values), or None."""
        if self.is_admin(user_id):
            return None
        limits = self.config.bot
        if len(self.store.active_jobs(user_id)) >= limits.concurrent_jobs:
            return "too_many_jobs", {"limit": limits.concurrent_jobs}
        midnight = datetime.now().replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        if limits.daily_quota and self.store.jobs_since(user_id, midnight) >= limits.daily_quota:
            return "quota_used", {"limit": limits.daily_quota}
        return None

    def job_key(self, event: Incoming | Press) -> str:
        """The engine's idempotency key for the job this message or press asks for."""
        return f"{self.origin}:{event.key}"

    async def say(self, place: Place, language: str, key: str, **values: Any) -> None:
        for piece in split_text(t(language, key, **values)):
            await self.outbox.send(place, Reply(piece))

    async def admitted(self, message: Incoming, role: Role = Role.USER) -> bool:
        """True when the sender may do this here; otherwise refuse politely, showing ids."""
        refusal = self.refusal(message.user, message.place, role)
        if refusal is None:
            return True
        key, values = refusal
        await self.say(message.place, self.language(message.user), key, **values)
        return False

    def refusal(
        self, user: User, place: Place, role: Role = Role.USER
    ) -> tuple[str, dict[str, Any]] | None:
        """Why `user` may not act in `place` (catalog key and values), or None when they may.
        Messages and button presses both ask it: a press under an old result is checked
        against the roles as they are now (a removed user, a group-only member in private)."""
        if role == Role.USER and self.roles.may_ask(user.id, place.chat_id, place.is_group):
            return None
        if role > Role.USER and self.roles.of(user.id) >= role:
            return None
        if place.is_group and role == Role.USER:
            return "group_not_allowed", {"chat_id": place.chat_id}
        if self.roles.of(user.id) >= Role.USER:
            return "admins_only", {}
        return "stranger", {"user_id": user.id}

    async def ask(self, event: Incoming | Press, language: str, call: Awaitable[T]) -> T | None:
        """The engine's answer, or None after telling the asker why there is none."""
        place = event.place
        try:
            return await call
        except EngineBusy as exc:
            await self.say(place, language, "engine_busy", seconds=round(exc.retry_after_s))
        except EngineUnavailable:
            log.warning("engine unreachable", exc_info=True)
            await self.say(place, language, "engine_down")
        except EngineError as exc:
            text = refusal_text(language, exc, admin=self.is_admin(event.user.id))
            await self.outbox.send(place, Reply(text))
        return None

    async def submit_admin_job(
        self, message: Incoming, language: str, params: dict[str, Any], kind: str, priority: str
    ) -> dict[str, Any] | None:
        """An admin's job (training, grid) keyed by the message: the new job, or None when the
        engine refused it (said to the admin) or a restarted bot follows it already."""
        call = self.engine.submit(
            params,
            user=engine_user(message.user.id),
            kind=kind,
            priority=priority,
            idempotency_key=self.job_key(message),
        )
        job = await self.ask(message, language, call)
        if job is None or self.store.job(job["id"]) is not None:
            return None
        return job

    def ip_named(self, text: str) -> IPConfig | None:
        """The IP named by the first word of `text` (a file's caption), else the default IP
        (None when no IP is configured)."""
        words = text.split()
        names = {ip.name for ip in self.config.ips}
        if words and words[0] in names:
            return self.config.find_ip(words[0])
        return self.config.default_ip_config()


class MalformedPress(ValueError):
    """Button data that no button of ours sends (stale, forged or garbled): the router answers
    the press, logs one line and does nothing else."""


JobButton = Callable[[Core, Press, JobRecord, int], Awaitable[str | None]]


def job_button(handler: JobButton) -> Callable[[Core, Press, list[str]], Awaitable[str | None]]:
    """A button under a job's results (`action:job_id[:index]`): the job and the candidate
    resolved; only the requester or an admin may press it."""

    @functools.wraps(handler)
    async def pressed(core: Core, press: Press, args: list[str]) -> str | None:
        language = core.language(press.user)
        job_id, index_text = [*args, "", ""][:2]
        if len(args) > 2 or not job_id.isalnum() or not (index_text or "0").isdigit():
            raise MalformedPress(f"not job:index: {args}")
        record = core.store.job(job_id)
        if record is None:
            log.info("button for job %s, which this bot does not know", job_id)
            return t(language, "job_unknown")
        if press.user.id != record.user_id and not core.is_admin(press.user.id):
            return t(language, "not_your_job")
        index = int(index_text or 0)
        if index >= max(len(record.seeds), 1):
            raise MalformedPress(f"job {job_id} has no candidate {index}")
        return await handler(core, press, record, index)

    return pressed
