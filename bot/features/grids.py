"""Admins' X/Y/Z comparison grids (/xyz): versions × LoRA weights × seeds, one labelled image."""

from __future__ import annotations

from typing import Any

from bot.core import Core
from bot.follower import Delivery
from bot.i18n import t
from bot.replies import Incoming, Picture
from bot.roles import Role
from bot.status import StatusMessage
from bot.store import JobRecord
from prompts.syntax import key_values


async def xyz(core: Core, message: Incoming, args: list[str]) -> None:
    """/xyz <ip> versions=... weights=... seeds=... [sampler= steps= cfg=]: a labelled grid."""
    if not await core.admitted(message, Role.ADMIN):
        return
    language = core.language(message.user)
    try:
        axes = key_values(args[1:])
    except ValueError:
        axes = {}
    if not args or not axes:
        await core.say(message.place, language, "xyz_usage")
        return
    request = {"ip": args[0], "axes": axes}
    if (job := await core.submit_admin_job(message, language, request, "xyz", "admin")) is None:
        return
    summary = t(language, "xyz_started")
    record = JobRecord(
        job["id"], message.user.id, message.place, "xyz", "", job["params"], language, summary
    )
    await core.follower.start(record, job.get("position"))


async def deliver_grid(
    core: Core, record: JobRecord, job: dict[str, Any], status: StatusMessage
) -> None:
    """The grid as a photo, its axes and time in the caption."""
    elapsed = job["finished_at"] - job["created_at"]
    png = await core.engine.output(job["outputs"][0])
    axes = " × ".join(job["info"]["axes"])
    caption = t(record.language, "xyz_done", axes=axes, seconds=f"{elapsed:.0f}")
    picture = Picture(png, caption, "xyz.png")
    await core.follower.retrying(lambda: core.outbox.send_photo(record.place, picture))


COMMANDS = {"xyz": xyz}
DELIVERIES = {"xyz": Delivery(deliver_grid, admins_only=True)}
