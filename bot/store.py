"""bot.db: what the bot must remember across restarts (sqlite-utils).

- users: language, settings, a pending "edit the prompt" reply
- access: roles granted at runtime (/allow, /deny, /admins)
- templates: users' saved parameter templates ("起手式")
- jobs: engine job -> chat, status message, what was asked, and whether its result was delivered
  (posters, and the admins' trainings and grids)
- messages: which sent message shows which job output (for /info)
- pictures: which user message brought which picture (kept by the engine, for img2img)
- posters: a picture's finished posters now and the spec that laid them out (copy, sizes, layout),
  so the next "换版式 / 改标题 / 换尺寸" continues from them
- dataset_sessions: an admin's open `/dataset new` session (its files are on the engine's disk)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from bot.replies import Place

# Job states as the bot sees them; the engine's final states collapse onto these.
ACTIVE, DONE, FAILED, CANCELLED = "active", "done", "failed", "cancelled"
# What jobs are: a user's posters (limits, /history, /queue, /cancel count these only), and the
# admins' LoRA work (bot/features/training.py and grids.py).
POSTER_KINDS = ("candidates", "final")


@dataclass
class JobRecord:
    """One engine job the bot follows for a chat."""

    job_id: str
    user_id: int
    place: Place
    kind: str  # "candidates" (a set to choose from), "final" (the HD poster), "train", "xyz"
    request: str  # the user's words, for /history, "edit prompt" and reruns
    params: dict[str, Any]  # the txt2img params submitted
    language: str
    summary: str = ""  # the acknowledgement's text (HTML); progress is shown below it
    status_message_id: int = 0
    state: str = ACTIVE
    delivered: bool = False
    seeds: list[int] = field(default_factory=list)
    subseeds: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    created_at: float = 0.0
    epochs_sent: int = 0  # a training's epochs whose loss curve and samples the chat has
    picked: int = 0  # the candidate (0-based) an HD job renders


_JSON_FIELDS = ("params", "seeds", "subseeds", "outputs")


def _row(record: JobRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in record.__dataclass_fields__ if name != "place"}
    row |= {name: json.dumps(row[name], ensure_ascii=False) for name in _JSON_FIELDS}
    place = record.place
    return row | {
        "chat_id": place.chat_id,
        "thread_id": place.thread_id,
        "is_group": place.is_group,
    }


def _record(row: dict[str, Any]) -> JobRecord:
    row = dict(row)
    place = Place(row.pop("chat_id"), row.pop("thread_id"), bool(row.pop("is_group")))
    row |= {name: json.loads(row[name]) for name in _JSON_FIELDS}
    row["delivered"] = bool(row["delivered"])
    row["epochs_sent"] = row.get("epochs_sent") or 0  # a bot.db from before the column
    row["picked"] = row.get("picked") or 0
    return JobRecord(**row, place=place)


class Store:
    """bot.db; every method is one short statement (cheap enough for the event loop)."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite_utils.Database(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db["users"].create(
            {"id": int, "language": str, "settings": str, "edit": str}, pk="id", if_not_exists=True
        )
        self.db["access"].create({"id": int, "role": str}, pk="id", if_not_exists=True)
        self.db["templates"].create(
            {"user_id": int, "name": str, "settings": str},
            pk=("user_id", "name"),
            if_not_exists=True,
        )
        job_columns = {"job_id": str, "user_id": int, "chat_id": int, "thread_id": int}
        job_columns |= {"is_group": bool, "kind": str, "request": str, "params": str}
        job_columns |= {"language": str, "summary": str, "status_message_id": int, "state": str}
        job_columns |= {"delivered": bool, "seeds": str, "subseeds": str, "outputs": str}
        job_columns |= {"created_at": float, "epochs_sent": int, "picked": int}
        self.db["jobs"].create(job_columns, pk="job_id", if_not_exists=True)
        self.db["jobs"].create_index(["user_id", "created_at"], if_not_exists=True)
        self.db["messages"].create(
            {"chat_id": int, "message_id": int, "job_id": str, "output": int},
            pk=("chat_id", "message_id"),
            if_not_exists=True,
        )
        self.db["posters"].create(
            {"job_id": str, "output": int, "spec": str, "posters": str},
            pk=("job_id", "output"),
            if_not_exists=True,
        )
        self.db["notices"].create(
            {"chat_id": int, "notice": str}, pk=("chat_id", "notice"), if_not_exists=True
        )
        self.db["dataset_sessions"].create(
            {"user_id": int, "session": str, "ip": str, "opened_by": str},
            pk="user_id",
            if_not_exists=True,
        )

    # notices said once per chat
    def first_notice(self, chat_id: int, notice: str) -> bool:
        """True the first time `notice` is asked for in this chat (then it is remembered)."""
        with self.db.conn:
            cursor = self.db.execute(
                "INSERT OR IGNORE INTO notices (chat_id, notice) VALUES (?, ?)", [chat_id, notice]
            )
        return cursor.rowcount == 1

    # users
    def user(self, user_id: int) -> dict[str, Any]:
        rows = list(self.db["users"].rows_where("id = ?", [user_id]))
        return rows[0] if rows else {"id": user_id, "language": None, "settings": "{}", "edit": ""}

    def update_user(self, user_id: int, **values: Any) -> None:
        self.db["users"].upsert({**self.user(user_id), **values}, pk="id")

    # access granted at runtime: "user", "admin", "group" or "denied"
    def role(self, chat_or_user_id: int) -> str | None:
        rows = list(self.db["access"].rows_where("id = ?", [chat_or_user_id]))
        return rows[0]["role"] if rows else None

    def set_role(self, chat_or_user_id: int, role: str) -> None:
        self.db["access"].upsert({"id": chat_or_user_id, "role": role}, pk="id")

    def ids_with_role(self, role: str) -> list[int]:
        return [row["id"] for row in self.db["access"].rows_where("role = ?", [role])]

    # templates
    def save_template(self, user_id: int, name: str, settings: dict[str, Any]) -> None:
        row = {"user_id": user_id, "name": name, "settings": json.dumps(settings)}
        self.db["templates"].upsert(row, pk=("user_id", "name"))

    def template(self, user_id: int, name: str) -> dict[str, Any] | None:
        rows = list(self.db["templates"].rows_where("user_id = ? and name = ?", [user_id, name]))
        return json.loads(rows[0]["settings"]) if rows else None

    def template_names(self, user_id: int) -> list[str]:
        rows = self.db["templates"].rows_where("user_id = ?", [user_id], order_by="name")
        return [row["name"] for row in rows]

    def delete_template(self, user_id: int, name: str) -> bool:
        found = self.template(user_id, name) is not None
        self.db["templates"].delete_where("user_id = ? and name = ?", [user_id, name])
        return found

    # jobs
    def save_job(self, record: JobRecord) -> None:
        record.created_at = record.created_at or time.time()
        self.db["jobs"].upsert(_row(record), pk="job_id", alter=True)  # alter: older bot.db

    def job(self, job_id: str) -> JobRecord | None:
        rows = list(self.db["jobs"].rows_where("job_id = ?", [job_id]))
        return _record(rows[0]) if rows else None

    @staticmethod
    def _of_kinds(where: str, args: list[Any], kinds: tuple[str, ...]) -> tuple[str, list[Any]]:
        return f"({where}) and kind in ({', '.join('?' * len(kinds))})", [*args, *kinds]

    def _jobs(
        self, where: str, args: list[Any], kinds: tuple[str, ...] = POSTER_KINDS, **options: Any
    ) -> list[JobRecord]:
        rows = self.db["jobs"].rows_where(*self._of_kinds(where, args, kinds), **options)
        return [_record(row) for row in rows]

    def undelivered_jobs(self, kinds: tuple[str, ...] = POSTER_KINDS) -> list[JobRecord]:
        """Jobs whose result a chat has not received yet (followed again after a restart)."""
        return self._jobs("delivered = 0", [], kinds, order_by="created_at")

    def active_jobs(self, user_id: int) -> list[JobRecord]:
        return self._jobs("user_id = ? and state = ?", [user_id, ACTIVE], order_by="created_at")

    def recent_jobs(self, user_id: int, limit: int = 10) -> list[JobRecord]:
        return self._jobs("user_id = ?", [user_id], order_by="created_at desc", limit=limit)

    def jobs_since(self, user_id: int, since: float) -> int:
        where = self._of_kinds("user_id = ? and created_at >= ?", [user_id, since], POSTER_KINDS)
        return self.db["jobs"].count_where(*where)

    # messages that show a job's output
    def remember_message(self, chat_id: int, message_id: int, job_id: str, output: int) -> None:
        row = {"chat_id": chat_id, "message_id": message_id, "job_id": job_id, "output": output}
        self.db["messages"].upsert(row, pk=("chat_id", "message_id"))

    def output_shown_in(self, chat_id: int, message_id: int) -> tuple[str, int] | None:
        where = "chat_id = ? and message_id = ?"
        rows = list(self.db["messages"].rows_where(where, [chat_id, message_id]))
        return (rows[0]["job_id"], rows[0]["output"]) if rows else None

    # pictures users sent (kept by the engine), by the message that brought them
    def remember_picture(self, chat_id: int, message_id: int, picture: dict[str, Any]) -> None:
        row = {"chat_id": chat_id, "message_id": message_id, "input": picture["input"]}
        row |= {"width": picture["width"], "height": picture["height"]}
        self.db["pictures"].upsert(row, pk=("chat_id", "message_id"))

    def picture_in(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        """{"input", "width", "height"} of the picture a message brought, or None."""
        where = "chat_id = ? and message_id = ?"
        rows = list(self.db["pictures"].rows_where(where, [chat_id, message_id]))
        return {k: rows[0][k] for k in ("input", "width", "height")} if rows else None

    # a picture's finished posters: the spec (poster option) and the engine's posters of it
    def save_posters(
        self, job_id: str, output: int, spec: dict[str, Any], posters: list[dict[str, Any]]
    ) -> None:
        row = {"job_id": job_id, "output": output, "spec": json.dumps(spec, ensure_ascii=False)}
        row["posters"] = json.dumps(posters, ensure_ascii=False)
        self.db["posters"].upsert(row, pk=("job_id", "output"))

    def posters(self, job_id: str, output: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The spec and posters of a job's picture `output` ({} and [] when not finished)."""
        rows = list(self.db["posters"].rows_where("job_id = ? and output = ?", [job_id, output]))
        if not rows:
            return {}, []
        return json.loads(rows[0]["spec"]), json.loads(rows[0]["posters"])

    # open dataset sessions: user -> the engine's session id, the IP, the message that opened it
    def dataset_session(self, user_id: int) -> dict[str, Any] | None:
        rows = list(self.db["dataset_sessions"].rows_where("user_id = ?", [user_id]))
        return rows[0] if rows else None

    def open_dataset_session(self, user_id: int, session: str, ip: str, opened_by: str) -> None:
        row = {"user_id": user_id, "session": session, "ip": ip, "opened_by": opened_by}
        self.db["dataset_sessions"].upsert(row, pk="user_id")

    def close_dataset_session(self, user_id: int) -> None:
        self.db["dataset_sessions"].delete_where("user_id = ?", [user_id])
