"""Who may do what: owners and admins from config and bot.db, allowed users, allowed groups.

Config lists are the floor: an owner listed in config cannot be denied from the chat. Runtime
changes (/allow, /deny, /admins) live in bot.db.
"""

from __future__ import annotations

from enum import IntEnum

from bot.store import Store
from posterbot.config import AccessConfig


class Role(IntEnum):
    """Ordered: a higher role may do everything a lower one may."""

    STRANGER = 0
    USER = 1
    ADMIN = 2
    OWNER = 3


class Roles:
    def __init__(self, access: AccessConfig, store: Store) -> None:
        self.access = access
        self.store = store

    def of(self, user_id: int) -> Role:
        if user_id in self.access.owners:
            return Role.OWNER
        stored = self.store.role(user_id)
        if stored == "denied":
            return Role.STRANGER
        if user_id in self.access.admins or stored == "admin":
            return Role.ADMIN
        if user_id in self.access.users or stored == "user":
            return Role.USER
        return Role.STRANGER

    def group_allowed(self, chat_id: int) -> bool:
        stored = self.store.role(chat_id)
        return stored != "denied" and (chat_id in self.access.groups or stored == "group")

    def may_ask(self, user_id: int, chat_id: int, is_group: bool) -> bool:
        """Private chats need an allowed user; in an allowed group every member may ask."""
        if is_group:
            return self.group_allowed(chat_id) or self.of(user_id) >= Role.ADMIN
        return self.of(user_id) >= Role.USER

    def allow(self, chat_or_user_id: int) -> None:
        """Negative ids are groups (Telegram's convention)."""
        self.store.set_role(chat_or_user_id, "group" if chat_or_user_id < 0 else "user")

    def deny(self, chat_or_user_id: int) -> None:
        self.store.set_role(chat_or_user_id, "denied")

    def promote(self, user_id: int) -> None:
        self.store.set_role(user_id, "admin")

    def demote(self, user_id: int) -> None:
        self.store.set_role(user_id, "user")

    def admins(self) -> list[int]:
        """Owners and admins, config first."""
        ids = [*self.access.owners, *self.access.admins, *self.store.ids_with_role("admin")]
        return [i for i in dict.fromkeys(ids) if self.of(i) >= Role.ADMIN]
