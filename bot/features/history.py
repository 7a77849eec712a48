"""A user's jobs: /history (re-runnable), /queue, /cancel, and /info (a PNG's parameters)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bot.core import Core, job_button
from bot.features.posters import rerun
from bot.i18n import lines, t
from bot.replies import Button, Incoming, Keyboard, Press, Reply, rows
from bot.status import progress_line
from bot.store import CANCELLED, JobRecord
from engine.service.client import FINAL_STATES, EngineError, EngineRejected

log = logging.getLogger(__name__)

HISTORY_SIZE = 10  # /history shows this many jobs, each re-runnable


def history_keyboard(language: str, job_ids: list[str]) -> Keyboard:
    buttons = [
        Button(t(language, "button_rerun", number=i + 1), f"rerun:{job_id}")
        for i, job_id in enumerate(job_ids)
    ]
    return rows(buttons)


def history_line(language: str, number: int, record: JobRecord) -> str:
    """A job's request, seeds (and variation seeds) and state."""
    values = {
        "number": number,
        "request": record.request,
        "seeds": ", ".join(map(str, record.seeds)) or "-",
        "state": t(language, f"state_{record.state}"),
    }
    if record.params.get("subseed_strength") and record.subseeds:
        subseeds = ", ".join(map(str, record.subseeds))
        return t(language, "history_line_variation", **values, subseeds=subseeds)
    return t(language, "history_line", **values)


async def history(core: Core, message: Incoming, args: list[str]) -> None:
    """/history: the last jobs with their seeds, each re-runnable."""
    if not await core.admitted(message):
        return
    language = core.language(message.user)
    records = core.store.recent_jobs(message.user.id, HISTORY_SIZE)
    if not records:
        await core.say(message.place, language, "history_empty")
        return
    listing = [history_line(language, i + 1, record) for i, record in enumerate(records)]
    keyboard = history_keyboard(language, [r.job_id for r in records])
    text = t(language, "history", lines=lines(listing))
    await core.outbox.send(message.place, Reply(text, keyboard))


async def run_again(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """Run a /history entry again with the same parameters."""
    await rerun(core, press, record, "rerun_summary")
    return t(core.language(press.user), "started")


async def queue(core: Core, message: Incoming, args: list[str]) -> None:
    """/queue: this user's jobs in the engine, with their places or progress."""
    if not await core.admitted(message):
        return
    language = core.language(message.user)
    listing = []
    for record in core.store.active_jobs(message.user.id):
        job = await core.engine.job(record.job_id)
        event = {"type": job["state"], "state": job["state"], "position": job.get("position")}
        line = progress_line(language, event | (job.get("progress") or {}))
        listing.append(t(language, "queue_line", job=record.job_id, line=line))
    jobs = lines(listing) if listing else t(language, "queue_empty")
    await core.say(message.place, language, "queue", jobs=jobs)


async def cancel(core: Core, message: Incoming, args: list[str]) -> None:
    """/cancel: cancel this user's queued and running jobs (they leave /queue at once)."""
    if not await core.admitted(message):
        return
    language = core.language(message.user)
    cancelled = 0
    for record in core.store.active_jobs(message.user.id):
        try:
            job = await core.engine.cancel(record.job_id)
        except EngineError:
            log.info("job %s could not be cancelled", record.job_id, exc_info=True)
            continue
        if job["state"] in FINAL_STATES and job["state"] != "cancelled":
            continue  # it ended meanwhile: its follower delivers it, so it is not counted
        # Its follower still sees the engine's final event and closes its status message.
        record.state = CANCELLED
        core.store.save_job(record)
        cancelled += 1
    await core.say(message.place, language, "cancelled", count=cancelled)


async def info(core: Core, message: Incoming, args: list[str]) -> None:
    """/info: a PNG's generation parameters, like WebUI's PNG Info."""
    if not await core.admitted(message):
        return
    language = core.language(message.user)
    data = message.document
    shown = None
    if data is None and message.reply_to_message_id is not None:
        shown = core.store.output_shown_in(message.place.chat_id, message.reply_to_message_id)
    if shown is not None and (record := core.store.job(shown[0])) is not None:
        data = await core.engine.output(record.outputs[shown[1]])
    if data is None:
        await core.say(message.place, language, "info_usage")
        return
    try:
        answer = await core.engine.png_info(data)
    except EngineRejected:  # not a PNG
        answer = {"parameters": {}, "items": {}}
    fields = answer["parameters"]
    if not fields:
        await core.say(message.place, language, "info_none")
        return
    parameters = [f"{k}: {v}" for k, v in fields.items() if k not in ("Prompt", "Negative prompt")]
    await core.say(
        message.place,
        language,
        "info",
        prompt=fields.get("Prompt", ""),
        negative=fields.get("Negative prompt") or "-",
        parameters="\n".join(parameters),
    )
    if poster := answer["items"].get("poster"):  # a finished poster: its copy and layout
        layout = json.loads(poster)
        width, height = layout["size"]
        await core.say(
            message.place,
            language,
            "info_poster",
            size=f"{width}×{height}",
            layout=layout["layout"],
            **layout["copy"],
        )


async def info_file(core: Core, message: Incoming) -> None:
    """A PNG sent as a file: its parameters."""
    await info(core, message, [])


def is_png(core: Core, user_id: int, filename: str, as_photo: bool) -> bool:
    return not as_photo and Path(filename).suffix.lower() == ".png"


COMMANDS = {"history": history, "queue": queue, "cancel": cancel, "info": info}
BUTTONS = {"rerun": job_button(run_again)}
FILES = [(is_png, info_file)]
