"""Admins' training datasets: a zip → a report with caption fixes as buttons, or a dataset
collected file by file in chat (/dataset new → files → /dataset done)."""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from bot.core import Core, MalformedPress
from bot.i18n import t
from bot.replies import Button, Incoming, Place, Press, Reply
from bot.roles import Role
from engine.service.client import DatasetRejected

SESSION_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".txt")  # what a dataset session takes
MAX_BUTTON_DATA = 64  # Telegram's callback_data limit
CAPTION_FIXES = ("stubs", "trigger")  # what the report's buttons offer (dsfix:<fix>:ip:name)
T = TypeVar("T")


def rejection_reason(language: str, rejection: dict[str, str]) -> str:
    """Why the engine refused a dataset file, in Chinese where it says so (else English)."""
    if language == "en":
        return rejection["reason"]
    return rejection.get("reason_zh") or rejection["reason"]


async def ask_dataset(
    core: Core, event: Incoming | Press, language: str, call: Awaitable[T]
) -> T | None:
    """`core.ask`, with refused dataset files listed one by one."""

    async def listing_refusals() -> T | None:
        try:
            return await call
        except DatasetRejected as exc:
            lines = [f"· {r['file']}：{rejection_reason(language, r)}" for r in exc.rejections]
            await core.say(event.place, language, "dataset_rejected", files="\n".join(lines))
            return None

    return await core.ask(event, language, listing_refusals())


async def send_report(
    core: Core, place: Place, language: str, ip: str, answer: dict[str, Any]
) -> None:
    """The dataset report, with the offered caption fixes as buttons."""
    report = answer["report"]
    buttons = []
    if report["missing_captions"]:
        data = f"dsfix:stubs:{ip}:{report['name']}"
        buttons.append(Button(t(language, "button_fix_stubs"), data))
    if report["captions_without_trigger"]:
        data = f"dsfix:trigger:{ip}:{report['name']}"
        buttons.append(Button(t(language, "button_fix_trigger"), data))
    buttons = [b for b in buttons if len(b.data.encode()) <= MAX_BUTTON_DATA]
    text_key = "text_en" if language == "en" else "text_zh"
    text = t(language, "dataset_report", report=answer[text_key], name=report["name"], ip=ip)
    await core.outbox.send(place, Reply(text, [buttons] if buttons else []))


def is_dataset_file(core: Core, user_id: int, filename: str, as_photo: bool) -> bool:
    """A zip from an admin, or a file for the admin's open dataset session."""
    if not core.is_admin(user_id):
        return False
    suffix = Path(filename).suffix.lower()
    if suffix == ".zip":
        return True
    open_session = core.store.dataset_session(user_id) is not None
    return open_session and (as_photo or suffix in SESSION_SUFFIXES)


async def dataset_file(core: Core, message: Incoming) -> None:
    """A zip → the dataset (named after the IP in its caption) and its report; else a file
    for the open session."""
    if not await core.admitted(message, Role.ADMIN):
        return
    language, place = core.language(message.user), message.place
    ip = core.ip_named(message.text)
    if message.document is None:
        await core.say(place, language, "file_too_big", name=message.filename)
    elif Path(message.filename).suffix.lower() != ".zip":
        await session_file(core, message, language)
    elif ip is None:
        await core.say(place, language, "no_ip_configured")
    else:
        call = core.engine.upload_dataset(message.document, name=ip.name, ip=ip.name, replace=True)
        if answer := await ask_dataset(core, message, language, call):
            await send_report(core, place, language, ip.name, answer)


async def session_file(core: Core, message: Incoming, language: str) -> None:
    """An image (its chat caption becomes its caption) or a .txt caption for the session."""
    opened = core.store.dataset_session(message.user.id)
    if opened is None:  # closed by a /dataset done while this file was downloading
        await core.say(message.place, language, "dataset_no_session")
        return
    call = core.engine.add_dataset_file(
        opened["session"],
        message.filename,
        message.document,
        caption=message.text or None,
        as_photo=message.as_photo,
    )
    if (answer := await ask_dataset(core, message, language, call)) is None:
        return
    key = "dataset_photo_added" if message.as_photo else "dataset_file_added"
    await core.say(message.place, language, key, name=message.filename, count=answer["images"])


async def fix_captions(core: Core, press: Press, args: list[str]) -> str | None:
    """A caption-fix button under a dataset report (`dsfix:fix:ip:name`, admins only)."""
    language = core.language(press.user)
    if not core.is_admin(press.user.id):
        return t(language, "admins_only")
    fix, ip, name = [*args, "", "", ""][:3]
    if fix not in CAPTION_FIXES or not ip or not name:
        raise MalformedPress(f"not dsfix:fix:ip:name: {args}")
    call = core.engine.fix_dataset(name, ip=ip, fix=fix)
    if answer := await ask_dataset(core, press, language, call):
        await core.say(press.place, language, "dataset_fixed", count=answer["changed"])
        await send_report(core, press.place, language, ip, answer)
    return None


async def dataset(core: Core, message: Incoming, args: list[str]) -> None:
    """/dataset new <ip> | done [name] | cancel: build a dataset from files sent one by one."""
    if not await core.admitted(message, Role.ADMIN):
        return
    language, place, user_id = core.language(message.user), message.place, message.user.id
    action = args[0] if args else ""
    opened = core.store.dataset_session(user_id)  # kept in bot.db across restarts
    if action == "new" and len(args) == 2 and opened is not None:
        # The files sent so far are kept; the same message received again after a restart
        # (Telegram re-delivers what the bot had not confirmed) is not answered twice.
        if opened["opened_by"] != core.job_key(message):
            await core.say(place, language, "dataset_already_open", ip=opened["ip"])
    elif action == "new" and len(args) == 2:
        call = core.engine.start_dataset_session(args[1])
        if session := await ask_dataset(core, message, language, call):
            core.store.open_dataset_session(user_id, session, args[1], core.job_key(message))
            await core.say(place, language, "dataset_started", ip=args[1])
    elif action in ("done", "cancel") and opened is None:
        await core.say(place, language, "dataset_no_session")
    elif action == "done":
        session, ip = opened["session"], opened["ip"]
        name = args[1] if len(args) > 1 else ip
        call = core.engine.finish_dataset_session(session, name, replace=True)
        if answer := await ask_dataset(core, message, language, call):
            core.store.close_dataset_session(user_id)
            await send_report(core, place, language, ip, answer)
    elif action == "cancel":
        core.store.close_dataset_session(user_id)
        await core.ask(message, language, core.engine.discard_dataset_session(opened["session"]))
        await core.say(place, language, "dataset_discarded")
    else:
        await core.say(place, language, "dataset_usage")


COMMANDS = {"dataset": dataset}
BUTTONS = {"dsfix": fix_captions}
FILES = [(is_dataset_file, dataset_file)]
