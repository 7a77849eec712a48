"""Admins' LoRA training runs: /train (progress, each epoch's loss curve and samples, the
result), /train status and /train cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.core import Core
from bot.follower import Delivery
from bot.i18n import t
from bot.replies import Incoming, Picture, Place
from bot.roles import Role
from bot.status import StatusMessage
from bot.store import JobRecord
from prompts.syntax import key_values


def progress_line(language: str, event: dict[str, Any], epochs: int) -> str:
    eta = round(event.get("eta_s") or 0)
    return t(
        language,
        "train_progress",
        epoch=event.get("epoch", "?"),
        epochs=epochs,
        step=event["step"],
        total=event["total"],
        loss=f"{event.get('loss', 0):.4f}",
        eta=f"{eta // 60}:{eta % 60:02d}",
    )


async def train(core: Core, message: Incoming, args: list[str]) -> None:
    """/train <ip> [key=value ...] | status | cancel."""
    if not await core.admitted(message, Role.ADMIN):
        return
    language = core.language(message.user)
    if args[:1] == ["status"]:
        await train_status(core, message, language)
        return
    if args[:1] == ["cancel"]:
        await train_cancel(core, message, language)
        return
    try:
        overrides = key_values(args[1:])
    except ValueError:
        overrides = None
    if not args or overrides is None:
        await core.say(message.place, language, "train_usage")
        return
    request = {"ip": args[0], "dataset": args[0], **overrides}
    if (
        job := await core.submit_admin_job(message, language, request, "train", "training")
    ) is None:
        return
    p = job["params"]
    summary = t(
        language,
        "train_started",
        ip=p["ip"],
        dataset=p["dataset"],
        epochs=p["epochs"],
        dim=p["network_dim"],
        alpha=f"{p['network_alpha']:g}",
        resolution=p["resolution"],
    )
    record = JobRecord(job["id"], message.user.id, message.place, "train", "", p, language, summary)
    await core.follower.start(record, job.get("position"))


async def active_trainings(
    core: Core, message: Incoming, language: str
) -> list[dict[str, Any]] | None:
    jobs = []
    for state in ("running", "queued"):
        if (found := await core.ask(message, language, core.engine.jobs(state=state))) is None:
            return None
        jobs += [job for job in found if job["kind"] == "train"]
    return jobs


async def train_status(core: Core, message: Incoming, language: str) -> None:
    """Each training's progress line, and its latest loss curve."""
    if (jobs := await active_trainings(core, message, language)) is None:
        return
    place = message.place
    if not jobs:
        await core.say(place, language, "train_none")
    for job in jobs:
        progress = job.get("progress") or {}
        if job["state"] == "queued" or not progress:
            line = t(language, "progress_queued", position=job.get("position") or "?")
        else:
            line = progress_line(language, progress, job["params"]["epochs"])
        await core.say(place, language, "train_status", ip=job["params"]["ip"], line=line)
        if progress.get("loss_curve"):
            caption = t(language, "train_epoch_curve", epoch=progress["saved_epoch"])
            png = await core.engine.output(progress["loss_curve"])
            await core.outbox.send_photo(place, Picture(png, caption, "loss.png"))


async def train_cancel(core: Core, message: Incoming, language: str) -> None:
    """Cancel every queued or running training (saved epochs stay)."""
    if (jobs := await active_trainings(core, message, language)) is None:
        return
    for job in jobs:
        await core.ask(message, language, core.engine.cancel(job["id"]))
    await core.say(message.place, language, "train_cancel_sent", count=len(jobs))


# --- delivery -----------------------------------------------------------------------------------


async def send_epoch(
    core: Core, place: Place, language: str, epoch: int, curve: str | None, samples: list[str]
) -> None:
    """An epoch's loss curve as a photo and its samples as one album."""
    if curve:
        caption = t(language, "train_epoch_curve", epoch=epoch)
        await core.outbox.send_photo(
            place, Picture(await core.engine.output(curve), caption, "loss.png")
        )
    pictures = [
        Picture(
            await core.engine.output(path),
            t(language, "train_sample", epoch=epoch, number=i + 1),
            Path(path).name,
        )
        for i, path in enumerate(samples)
    ]
    if pictures:
        await core.outbox.send_album(place, pictures)


async def show_training(
    core: Core, record: JobRecord, event: dict[str, Any], status: StatusMessage
) -> None:
    """Progress edits, and each newly saved epoch's loss curve and samples."""
    if event["type"] != "progress":
        return
    language = record.language
    await status.show(progress_line(language, event, record.params["epochs"]))
    if event.get("saved_epoch", 0) > record.epochs_sent:
        epoch = event["saved_epoch"]
        await send_epoch(core, record.place, language, epoch, event["loss_curve"], event["samples"])
        record.epochs_sent = epoch
        core.store.save_job(record)


def trained(job: dict[str, Any]) -> bool:
    """Done, or cancelled after saving an epoch (that epoch is a version too)."""
    return job["state"] in ("done", "cancelled") and bool(job.get("info"))


async def deliver_training(
    core: Core, record: JobRecord, job: dict[str, Any], status: StatusMessage
) -> None:
    """The version it made, the last epoch if not sent yet, and what to do next."""
    info, language, place = job["info"], record.language, record.place
    epoch = info["epochs_done"]
    loss = "-" if info["final_loss"] is None else f"{info['final_loss']:.4f}"
    key = "train_done" if info["status"] == "done" else "train_cancelled"
    await status.show(t(language, key, version=info["version"], epoch=epoch, loss=loss), force=True)
    if epoch > record.epochs_sent:
        last = [path for path in info["samples"] if Path(path).name.startswith(f"e{epoch:06d}-")]
        await send_epoch(core, place, language, epoch, info["loss_curve"], last)
    if epoch:
        ip, number = record.params["ip"], info["version"].rsplit("-v", 1)[1]
        await core.say(place, language, "train_next", ip=ip, version=f"v{number}")


COMMANDS = {"train": train}
DELIVERIES = {
    "train": Delivery(
        deliver_training,
        progress=show_training,
        succeeded=trained,
        failed_key="train_failed",
        lost_key="train_lost",
        admins_only=True,
        done_key=None,  # the epoch's own message says it is done
    )
}
