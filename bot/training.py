"""Admins' LoRA work from chat (issue 6): datasets, training, versions, X/Y/Z grids.

Plain code like `bot.conversation` (no Telegram): each entry point takes an `Incoming` (or a
`Press`) and answers through the conversation's outbox; the engine is reached only through
`engine.client`. Every entry point admits owners and admins only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bot.i18n import catalog, t
from bot.jobs import StatusMessage
from bot.replies import Button, Incoming, Picture, Place, Press, Reply, engine_user
from bot.roles import Role
from bot.store import DONE, FAILED, TRAINING_KINDS, JobRecord
from engine.service.client import (
    DatasetRejected,
    EngineBusy,
    EngineError,
    EngineRejected,
    EngineUnavailable,
)
from prompts.syntax import key_values

if TYPE_CHECKING:
    from bot.conversation import Conversation

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")  # can run code when loaded: refused
SESSION_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".txt")  # what a dataset session takes
MAX_SEND_BYTES = 50 * 2**20  # Telegram's upload limit for bots: a larger LoRA cannot be sent
MAX_BUTTON_DATA = 64  # Telegram's callback_data limit
FINAL = ("done", "failed", "cancelled", "dead")
T = TypeVar("T")


def rule_text(language: str, exc: EngineRejected) -> str:
    """A refused parameter in the user's language: our wording of the rule when the catalog
    has one, with the engine's exact message (values included) after it."""
    key = f"rule_{exc.field}"
    if key in catalog(language):
        return t(language, "train_refused", rule=t(language, key), detail=str(exc))
    return t(language, "train_refused_plain", detail=str(exc))


def rejection_reason(language: str, rejection: dict[str, str]) -> str:
    """Why the engine refused a dataset file, in Chinese where it says so (else English)."""
    if language == "en":
        return rejection["reason"]
    return rejection.get("reason_zh") or rejection["reason"]


class Training:
    def __init__(self, chat: Conversation) -> None:
        """`chat`: the conversation core (config, engine, outbox, access checks, replies)."""
        self.chat = chat
        self._tasks: set[asyncio.Task] = set()

    # --- helpers ------------------------------------------------------------------------------

    async def allowed(self, message: Incoming) -> str | None:
        """The admin's language, or None after refusing a non-admin."""
        if not await self.chat.admitted(message, Role.ADMIN):
            return None
        return self.chat.language(message.user)

    async def ask(self, place: Place, language: str, call: Awaitable[T]) -> T | None:
        """The engine's answer, or None after telling the user why there is none."""
        try:
            return await call
        except DatasetRejected as exc:
            lines = [f"· {r['file']}：{rejection_reason(language, r)}" for r in exc.rejections]
            await self.chat.say(place, language, "dataset_rejected", files="\n".join(lines))
        except EngineRejected as exc:
            await self.chat.outbox.send(place, Reply(rule_text(language, exc)))
        except EngineBusy as exc:
            await self.chat.say(place, language, "engine_busy", seconds=exc.retry_after_s)
        except EngineUnavailable:
            await self.chat.say(place, language, "engine_down")
        except EngineError as exc:
            await self.chat.say(place, language, "engine_refused", reason=str(exc))
        return None

    def ip_for(self, text: str) -> Any:
        """The IP named by the first word of `text` (a file's caption), else the default IP
        (None when no IP is configured)."""
        words = text.split()
        names = {ip.name for ip in self.chat.config.ips}
        if words and words[0] in names:
            return self.chat.config.find_ip(words[0])
        return self.chat.config.default_ip_config()

    def follow(self, work: Awaitable[None], name: str) -> None:
        """Run `work` in the background (a training or grid being followed)."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def send_report(self, place: Place, language: str, ip: str, answer: dict) -> None:
        """The dataset report, with the offered caption fixes as buttons."""
        report = answer["report"]
        buttons = []
        if report["missing_captions"]:
            buttons.append(
                Button(t(language, "button_fix_stubs"), f"dsfix:stubs:{ip}:{report['name']}")
            )
        if report["captions_without_trigger"]:
            buttons.append(
                Button(t(language, "button_fix_trigger"), f"dsfix:trigger:{ip}:{report['name']}")
            )
        buttons = [b for b in buttons if len(b.data.encode()) <= MAX_BUTTON_DATA]
        text_key = "text_en" if language == "en" else "text_zh"
        text = t(language, "dataset_report", report=answer[text_key], name=report["name"], ip=ip)
        await self.chat.outbox.send(place, Reply(text, [buttons] if buttons else []))

    # --- uploads ------------------------------------------------------------------------------

    def wants(self, user_id: int, filename: str, as_photo: bool) -> bool:
        """Whether an attachment is ours, decided before downloading it: a dataset zip, a LoRA
        or a pickle from an admin, or a file for the sender's open dataset session."""
        if self.chat.roles.of(user_id) < Role.ADMIN:
            return False
        suffix = Path(filename).suffix.lower()
        if suffix in (".zip", ".safetensors", *PICKLE_SUFFIXES):
            return True
        open_session = self.chat.store.dataset_session(user_id) is not None
        return open_session and (as_photo or suffix in SESSION_SUFFIXES)

    async def upload(self, message: Incoming) -> None:
        """A file from an admin: a zip → dataset report; a LoRA → a version; session files."""
        if (language := await self.allowed(message)) is None:
            return
        place, suffix = message.place, Path(message.filename).suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            await self.chat.say(place, language, "lora_pickle", name=message.filename)
        elif message.document is None:
            await self.chat.say(place, language, "file_too_big", name=message.filename)
        elif suffix in (".zip", ".safetensors") and self.ip_for(message.text) is None:
            await self.chat.say(place, language, "no_ip_configured")
        elif suffix == ".zip":
            ip = self.ip_for(message.text).name
            call = self.chat.engine.upload_dataset(message.document, name=ip, ip=ip, replace=True)
            if answer := await self.ask(place, language, call):
                await self.send_report(place, language, ip, answer)
        elif suffix == ".safetensors":
            ip = self.ip_for(message.text).name
            call = self.chat.engine.register_lora(ip, message.filename, message.document)
            if version := await self.ask(place, language, call):
                await self.chat.say(place, language, "lora_registered", name=version["name"], ip=ip)
        else:
            await self.session_file(message, language)

    async def session_file(self, message: Incoming, language: str) -> None:
        """An image (its chat caption becomes its caption) or a .txt caption for the session."""
        opened = self.chat.store.dataset_session(message.user.id)
        if opened is None:  # closed by a /dataset done while this file was downloading
            await self.chat.say(message.place, language, "dataset_no_session")
            return
        call = self.chat.engine.add_dataset_file(
            opened["session"],
            message.filename,
            message.document,
            caption=message.text or None,
            as_photo=message.as_photo,
        )
        if (answer := await self.ask(message.place, language, call)) is None:
            return
        key = "dataset_photo_added" if message.as_photo else "dataset_file_added"
        await self.chat.say(
            message.place, language, key, name=message.filename, count=answer["images"]
        )

    async def press_fix(self, press: Press, rest: str) -> str | None:
        """A caption-fix button under a dataset report (admins only)."""
        language = self.chat.language(press.user)
        if self.chat.roles.of(press.user.id) < Role.ADMIN:
            return t(language, "admins_only")
        fix, ip, name = [*rest.split(":"), "", "", ""][:3]
        call = self.chat.engine.fix_dataset(name, ip=ip, fix=fix)
        if answer := await self.ask(press.place, language, call):
            await self.chat.say(press.place, language, "dataset_fixed", count=answer["changed"])
            await self.send_report(press.place, language, ip, answer)
        return None

    # --- /dataset -----------------------------------------------------------------------------

    async def dataset(self, message: Incoming, args: list[str]) -> None:
        """/dataset new <ip> | done [name] | cancel: build a dataset from files sent one by one."""
        if (language := await self.allowed(message)) is None:
            return
        place, user_id = message.place, message.user.id
        action = args[0] if args else ""
        opened = self.chat.store.dataset_session(user_id)  # kept in bot.db across restarts
        if action == "new" and len(args) == 2 and opened is not None:
            # The files sent so far are kept; the same message received again after a restart
            # (Telegram re-delivers what the bot had not confirmed) is not answered twice.
            if opened["opened_by"] != self.chat.job_key(message):
                await self.chat.say(place, language, "dataset_already_open", ip=opened["ip"])
        elif action == "new" and len(args) == 2:
            if session := await self.ask(
                place, language, self.chat.engine.start_dataset_session(args[1])
            ):
                key = self.chat.job_key(message)
                self.chat.store.open_dataset_session(user_id, session, args[1], key)
                await self.chat.say(place, language, "dataset_started", ip=args[1])
        elif action in ("done", "cancel") and opened is None:
            await self.chat.say(place, language, "dataset_no_session")
        elif action == "done":
            session, ip = opened["session"], opened["ip"]
            name = args[1] if len(args) > 1 else ip
            call = self.chat.engine.finish_dataset_session(session, name, replace=True)
            if answer := await self.ask(place, language, call):
                self.chat.store.close_dataset_session(user_id)
                await self.send_report(place, language, ip, answer)
        elif action == "cancel":
            self.chat.store.close_dataset_session(user_id)
            call = self.chat.engine.discard_dataset_session(opened["session"])
            await self.ask(place, language, call)
            await self.chat.say(place, language, "dataset_discarded")
        else:
            await self.chat.say(place, language, "dataset_usage")

    # --- /train -------------------------------------------------------------------------------

    async def train(self, message: Incoming, args: list[str]) -> None:
        """/train <ip> [key=value ...] | status | cancel."""
        if (language := await self.allowed(message)) is None:
            return
        place = message.place
        if args[:1] == ["status"]:
            await self.train_status(place, language)
            return
        if args[:1] == ["cancel"]:
            await self.train_cancel(place, language)
            return
        try:
            overrides = key_values(args[1:])
        except ValueError:
            overrides = None
        if not args or overrides is None:
            await self.chat.say(place, language, "train_usage")
            return
        params = {"ip": args[0], "dataset": args[0], **overrides}
        call = self.chat.engine.submit(
            params,
            user=engine_user(message.user.id),
            kind="train",
            priority="training",
            idempotency_key=self.chat.job_key(message),
        )
        if (job := await self.ask(place, language, call)) is None:
            return
        if self.chat.store.job(job["id"]) is not None:
            return  # this message was handled before a restart; its training is followed
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
        shown = t(language, "progress_queued", position=job.get("position") or "?")
        message_id = await self.chat.outbox.send(place, Reply(f"{summary}\n\n{shown}"))
        record = JobRecord(job["id"], message.user.id, place, "train", "", p, language, summary)
        record.status_message_id = message_id
        self.chat.store.save_job(record)  # followed again after a bot restart
        self.follow(self.follow_training(record, shown), f"train-{job['id']}")

    def resume(self) -> int:
        """Follow the trainings and grids a chat still waits for (after a restart)."""
        records = self.chat.store.undelivered_jobs(TRAINING_KINDS)
        for record in records:
            if record.kind == "train":
                self.follow(self.follow_training(record, ""), f"train-{record.job_id}")
            else:
                self.follow(self.deliver_grid(record), f"xyz-{record.job_id}")
        return len(records)

    async def follow_training(self, record: JobRecord, shown: str) -> None:
        """Progress edits, each ended epoch's loss curve and samples, then the result."""
        status = self.chat.jobs.status_message(record, shown)
        language, place = record.language, record.place
        try:
            async for event in self.chat.engine.events(record.job_id):
                if event["type"] in FINAL:
                    await self.training_ended(record, status, event["job"])
                    return
                if event["type"] != "progress":
                    continue
                await status.show(self.progress_line(language, event, record.params["epochs"]))
                if event.get("saved_epoch", 0) > record.epochs_sent:
                    epoch = event["saved_epoch"]
                    await self.send_epoch(
                        place, language, epoch, event["loss_curve"], event["samples"]
                    )
                    record.epochs_sent = epoch
                    self.chat.store.save_job(record)
        except EngineError:
            # Left undelivered: the next start follows it again; meanwhile the admin knows.
            log.exception("following training job %s failed", record.job_id)
            with contextlib.suppress(Exception):
                await self.chat.say(place, language, "train_lost", job=record.job_id)
        finally:
            status.close()

    @staticmethod
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

    async def send_epoch(
        self, place: Place, language: str, epoch: int, curve: str | None, samples: list[str]
    ) -> None:
        """An epoch's loss curve as a photo and its samples as one album."""
        engine = self.chat.engine
        if curve:
            caption = t(language, "train_epoch_curve", epoch=epoch)
            await self.chat.outbox.send_photo(
                place, Picture(await engine.output(curve), caption, "loss.png")
            )
        pictures = [
            Picture(
                await engine.output(path),
                t(language, "train_sample", epoch=epoch, number=i + 1),
                Path(path).name,
            )
            for i, path in enumerate(samples)
        ]
        if pictures:
            await self.chat.outbox.send_album(place, pictures)

    async def training_ended(
        self, record: JobRecord, status: StatusMessage, job: dict[str, Any]
    ) -> None:
        info, language, place = job.get("info") or {}, record.language, record.place
        if job["state"] not in ("done", "cancelled") or not info:
            reason = job.get("error") or job["state"]
            await status.show(t(language, "job_failed", reason=reason), force=True)
            self.chat.jobs.finish(record, FAILED)
            return
        epoch = info["epochs_done"]
        loss = "-" if info["final_loss"] is None else f"{info['final_loss']:.4f}"
        key = "train_done" if info["status"] == "done" else "train_cancelled"
        await status.show(
            t(language, key, version=info["version"], epoch=epoch, loss=loss), force=True
        )
        if epoch > record.epochs_sent:
            last = [
                path for path in info["samples"] if Path(path).name.startswith(f"e{epoch:06d}-")
            ]
            await self.send_epoch(place, language, epoch, info["loss_curve"], last)
        if epoch:
            ip, number = record.params["ip"], info["version"].rsplit("-v", 1)[1]
            await self.chat.say(place, language, "train_next", ip=ip, version=f"v{number}")
        self.chat.jobs.finish(record, DONE)

    async def active_trainings(self, place: Place, language: str) -> list[dict[str, Any]] | None:
        jobs = []
        for state in ("running", "queued"):
            found = await self.ask(place, language, self.chat.engine.jobs(state=state))
            if found is None:
                return None
            jobs += [job for job in found if job["kind"] == "train"]
        return jobs

    async def train_status(self, place: Place, language: str) -> None:
        """Each training's progress line, and its latest loss curve."""
        if (jobs := await self.active_trainings(place, language)) is None:
            return
        if not jobs:
            await self.chat.say(place, language, "train_none")
        for job in jobs:
            progress = job.get("progress") or {}
            if job["state"] == "queued" or not progress:
                line = t(language, "progress_queued", position=job.get("position") or "?")
            else:
                line = self.progress_line(language, progress, job["params"]["epochs"])
            await self.chat.say(place, language, "train_status", ip=job["params"]["ip"], line=line)
            if progress.get("loss_curve"):
                caption = t(language, "train_epoch_curve", epoch=progress["saved_epoch"])
                png = await self.chat.engine.output(progress["loss_curve"])
                await self.chat.outbox.send_photo(place, Picture(png, caption, "loss.png"))

    async def train_cancel(self, place: Place, language: str) -> None:
        """Cancel every queued or running training (saved epochs stay)."""
        if (jobs := await self.active_trainings(place, language)) is None:
            return
        for job in jobs:
            await self.ask(place, language, self.chat.engine.cancel(job["id"]))
        await self.chat.say(place, language, "train_cancel_sent", count=len(jobs))

    # --- versions -----------------------------------------------------------------------------

    async def versions(self, message: Incoming, args: list[str]) -> None:
        """/versions [ip]: versions with their parameters and final loss; ★ = posters use it."""
        if (language := await self.allowed(message)) is None:
            return
        found = await self.ask(
            message.place, language, self.chat.engine.versions(args[0] if args else None)
        )
        if found is None:
            return
        lines = []
        for v in found:
            p = v.get("params") or {}
            lines.append(
                t(
                    language,
                    "version_line",
                    mark="★" if v["promoted"] else "·",
                    name=v["name"],
                    status=v["status"],
                    loss="-" if v.get("final_loss") is None else f"{v['final_loss']:.4f}",
                    dim=p.get("network_dim", p.get("ss_network_dim", "?")),
                    alpha=p.get("network_alpha", p.get("ss_network_alpha", "?")),
                    epochs=v.get("epochs_done", p.get("ss_num_epochs", "?")),
                )
            )
        listing = "\n".join(lines) or t(language, "versions_none")
        await self.chat.say(message.place, language, "versions", lines=listing)

    async def promote(self, message: Incoming, args: list[str]) -> None:
        """/promote <ip> vN: what the IP's posters use from the next one on."""
        if (language := await self.allowed(message)) is None:
            return
        if len(args) != 2:
            await self.chat.say(message.place, language, "promote_usage")
            return
        version = await self.ask(
            message.place, language, self.chat.engine.promote(args[0], args[1])
        )
        if version:
            await self.chat.say(
                message.place, language, "promoted", ip=args[0], version=version["name"]
            )

    async def rollback(self, message: Incoming, args: list[str]) -> None:
        """/rollback <ip>: back to the version promoted before."""
        if (language := await self.allowed(message)) is None:
            return
        if len(args) != 1:
            await self.chat.say(message.place, language, "rollback_usage")
            return
        if version := await self.ask(message.place, language, self.chat.engine.rollback(args[0])):
            await self.chat.say(
                message.place, language, "promoted", ip=args[0], version=version["name"]
            )

    async def export(self, message: Incoming, args: list[str]) -> None:
        """/export <ip-vN>: the version's WebUI-layout .safetensors as a file."""
        if (language := await self.allowed(message)) is None:
            return
        if not args:
            await self.chat.say(message.place, language, "export_usage")
            return
        name = "-".join(args[:2])  # `dada-v3`, or `dada v3`
        if (
            data := await self.ask(message.place, language, self.chat.engine.export_lora(name))
        ) is None:
            return
        if len(data) > MAX_SEND_BYTES:
            await self.chat.say(
                message.place, language, "export_too_big", name=name, limit=MAX_SEND_BYTES // 2**20
            )
            return
        caption = t(language, "exported", name=name)
        await self.chat.outbox.send_document(
            message.place, Picture(data, caption, f"{name}.safetensors")
        )

    # --- /xyz ---------------------------------------------------------------------------------

    async def xyz(self, message: Incoming, args: list[str]) -> None:
        """/xyz <ip> versions=... weights=... seeds=... [sampler= steps= cfg=]: a labelled grid."""
        if (language := await self.allowed(message)) is None:
            return
        try:
            axes = key_values(args[1:])
        except ValueError:
            axes = {}
        if not args or not axes:
            await self.chat.say(message.place, language, "xyz_usage")
            return
        call = self.chat.engine.submit(
            {"ip": args[0], "axes": axes},
            user=engine_user(message.user.id),
            kind="xyz",
            priority="admin",
            idempotency_key=self.chat.job_key(message),
        )
        if (job := await self.ask(message.place, language, call)) is None:
            return
        if self.chat.store.job(job["id"]) is not None:
            return  # this message was handled before a restart; its grid is followed
        await self.chat.say(message.place, language, "xyz_started")
        user, place = message.user.id, message.place
        record = JobRecord(job["id"], user, place, "xyz", "", job["params"], language)
        self.chat.store.save_job(record)  # delivered after a bot restart too
        self.follow(self.deliver_grid(record), f"xyz-{job['id']}")

    async def deliver_grid(self, record: JobRecord) -> None:
        place, language = record.place, record.language
        try:
            job = await self.chat.engine.wait(record.job_id)
        except EngineError:
            log.exception("following grid job %s failed", record.job_id)
            return  # left undelivered: the next start follows it again
        if job["state"] != "done":
            reason = job.get("error") or job["state"]
            await self.chat.say(place, language, "job_failed", reason=reason)
            self.chat.jobs.finish(record, FAILED)
            return
        png = await self.chat.engine.output(job["outputs"][0])
        caption = t(
            language,
            "xyz_done",
            axes=" × ".join(job["info"]["axes"]),
            seconds=f"{job['finished_at'] - job['created_at']:.0f}",
        )
        await self.chat.outbox.send_photo(place, Picture(png, caption, "xyz.png"))
        self.chat.jobs.finish(record, DONE)
