"""An IP's LoRA versions: /versions, /promote, /rollback, /export, and LoRA files sent in chat."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.core import Core
from bot.i18n import lines, t
from bot.replies import Incoming, Picture
from bot.roles import Role

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")  # can run code when loaded: refused
MAX_SEND_BYTES = 50 * 2**20  # Telegram's upload limit for bots: a larger LoRA cannot be sent


def version_line(language: str, version: dict[str, Any]) -> str:
    """Mark, name, status, final loss and the main training parameters of a version."""
    p = version.get("params") or {}
    loss = version.get("final_loss")
    return t(
        language,
        "version_line",
        mark="★" if version["promoted"] else "·",
        name=version["name"],
        status=version["status"],
        loss="-" if loss is None else f"{loss:.4f}",
        dim=p.get("network_dim", p.get("ss_network_dim", "?")),
        alpha=p.get("network_alpha", p.get("ss_network_alpha", "?")),
        epochs=version.get("epochs_done", p.get("ss_num_epochs", "?")),
    )


async def versions(core: Core, message: Incoming, args: list[str]) -> None:
    """/versions [ip]: versions with their parameters and final loss; ★ = posters use it."""
    if not await core.admitted(message, Role.ADMIN):
        return
    language = core.language(message.user)
    call = core.engine.versions(args[0] if args else None)
    if (found := await core.ask(message, language, call)) is None:
        return
    listing = lines(version_line(language, v) for v in found) or t(language, "versions_none")
    await core.say(message.place, language, "versions", lines=listing)


async def promote(core: Core, message: Incoming, args: list[str]) -> None:
    """/promote <ip> vN: what the IP's posters use from the next one on (the version in use
    already: nothing changes, and the chat says so)."""
    await _change_promoted(core, message, args, 2, "promote_usage", core.engine.promote)


async def rollback(core: Core, message: Incoming, args: list[str]) -> None:
    """/rollback <ip>: back to the version promoted before."""
    await _change_promoted(core, message, args, 1, "rollback_usage", core.engine.rollback)


async def _change_promoted(
    core: Core,
    message: Incoming,
    args: list[str],
    count: int,
    usage: str,
    change: Callable[..., Awaitable[dict[str, Any]]],
) -> None:
    """An admin's /promote or /rollback: `count` arguments, the engine's `change`, the answer."""
    if not await core.admitted(message, Role.ADMIN):
        return
    language = core.language(message.user)
    if len(args) != count:
        await core.say(message.place, language, usage)
    elif version := await core.ask(message, language, change(*args)):
        said = "promoted" if version.get("changed", True) else "promote_unchanged"
        await core.say(message.place, language, said, ip=args[0], version=version["name"])


async def export(core: Core, message: Incoming, args: list[str]) -> None:
    """/export <ip-vN>: the version's WebUI-layout .safetensors as a file."""
    if not await core.admitted(message, Role.ADMIN):
        return
    language, place = core.language(message.user), message.place
    if not args:
        await core.say(place, language, "export_usage")
        return
    name = "-".join(args[:2])  # `dada-v3`, or `dada v3`
    if (data := await core.ask(message, language, core.engine.export_lora(name))) is None:
        return
    if len(data) > MAX_SEND_BYTES:
        limit = MAX_SEND_BYTES // 2**20
        await core.say(place, language, "export_too_big", name=name, limit=limit)
        return
    picture = Picture(data, t(language, "exported", name=name), f"{name}.safetensors")
    await core.outbox.send_document(place, picture)


def is_lora_file(core: Core, user_id: int, filename: str, as_photo: bool) -> bool:
    """A LoRA (or a pickle, to refuse) from an admin."""
    suffix = Path(filename).suffix.lower()
    return core.is_admin(user_id) and suffix in (".safetensors", *PICKLE_SUFFIXES)


async def lora_file(core: Core, message: Incoming) -> None:
    """A .safetensors becomes the next version of the IP in its caption; pickles are refused."""
    if not await core.admitted(message, Role.ADMIN):
        return
    language, place = core.language(message.user), message.place
    ip = core.ip_named(message.text)
    if Path(message.filename).suffix.lower() in PICKLE_SUFFIXES:
        await core.say(place, language, "lora_pickle", name=message.filename)
    elif message.document is None:
        await core.say(place, language, "file_too_big", name=message.filename)
    elif ip is None:
        await core.say(place, language, "no_ip_configured")
    else:
        call = core.engine.register_lora(ip.name, message.filename, message.document)
        if version := await core.ask(message, language, call):
            await core.say(place, language, "lora_registered", name=version["name"], ip=ip.name)


COMMANDS = {"versions": versions, "promote": promote, "rollback": rollback, "export": export}
FILES = [(is_lora_file, lora_file)]
