"""Who may use the bot: /start and /help by role, /allow, /deny and /admins."""

from __future__ import annotations

from collections.abc import Callable

from bot.core import Core
from bot.i18n import lines, t
from bot.replies import Incoming
from bot.roles import Role


async def help_command(core: Core, message: Incoming, args: list[str]) -> None:
    """/start and /help: what the bot does and the commands this user may use."""
    if not await core.admitted(message):
        return
    language = core.language(message.user)
    admin = core.is_admin(message.user.id)
    await core.say(message.place, language, "help_admin" if admin else "help")


async def allow(core: Core, message: Incoming, args: list[str]) -> None:
    """/allow ID: let a user (or, with a negative id, a group) use the bot."""
    await change_access(core, message, args, core.roles.allow, "allowed")


async def deny(core: Core, message: Incoming, args: list[str]) -> None:
    """/deny ID: take access away from a user or group."""
    await change_access(core, message, args, core.roles.deny, "denied")


async def admins(core: Core, message: Incoming, args: list[str]) -> None:
    """/admins [add|remove ID]: list admins; owners add and remove them."""
    if not await core.admitted(message, Role.ADMIN):
        return
    if args and args[0] in ("add", "remove"):
        change = core.roles.promote if args[0] == "add" else core.roles.demote
        await change_access(core, message, args[1:], change, "admins_changed", Role.OWNER)
        return
    language = core.language(message.user)
    listing = lines(t(language, "admin_line", id=i) for i in core.roles.admins())
    await core.say(message.place, language, "admins_list", ids=listing or "-")


async def change_access(
    core: Core,
    message: Incoming,
    args: list[str],
    change: Callable[[int], None],
    key: str,
    role: Role = Role.ADMIN,
) -> None:
    """Apply `change` to the id in `args` (owners from the config stay as they are)."""
    if not await core.admitted(message, role):
        return
    language = core.language(message.user)
    target = args[0] if args else ""
    if not target.lstrip("-").isdigit():
        await core.say(message.place, language, "access_usage")
    elif int(target) in core.config.access.owners:
        await core.say(message.place, language, "owner_fixed")
    else:
        change(int(target))
        await core.say(message.place, language, key, id=target)


COMMANDS = {
    "start": help_command,
    "help": help_command,
    "allow": allow,
    "deny": deny,
    "admins": admins,
}
