"""bot.db and roles: what survives a restart, and who may do what."""

from bot.replies import Place
from bot.roles import Role, Roles
from bot.store import JobRecord, Store
from posterbot.config import AccessConfig


def test_jobs_survive_reopening_and_undelivered_ones_are_found(tmp_path):
    store = Store(tmp_path / "bot.db")
    record = JobRecord("j1", 5, Place(-100, 7, True), "candidates", "雪地", {"seed": 1}, "zh")
    store.save_job(record)
    record.delivered = True
    store.save_job(JobRecord("j2", 5, Place(5), "final", "x", {}, "en", delivered=True))
    reopened = Store(tmp_path / "bot.db")
    assert [r.job_id for r in reopened.undelivered_jobs()] == ["j1"]
    assert reopened.job("j1").place == Place(-100, 7, True)


def test_a_pictures_latest_finished_posters_survive_reopening(tmp_path):
    store = Store(tmp_path / "bot.db")
    assert store.posters("j1", 0) == ({}, [])  # a picture never finished
    spec = {"title": "圣诞快乐", "layout": "auto", "targets": [{"name": "小红书"}]}
    store.save_posters("j1", 0, spec, [{"layout": "top", "png": "a.png"}])
    store.save_posters("j1", 0, spec | {"title": "新年快乐"}, [{"layout": "top", "png": "b.png"}])
    spec, posters = Store(tmp_path / "bot.db").posters("j1", 0)
    assert spec["title"] == "新年快乐" and posters[0]["png"] == "b.png"
    assert store.posters("j1", 1) == ({}, [])


def test_trainings_are_kept_apart_from_a_users_posters(tmp_path):
    store = Store(tmp_path / "bot.db")
    store.save_job(JobRecord("p1", 5, Place(5), "candidates", "雪地", {}, "zh"))
    store.save_job(JobRecord("t1", 5, Place(5), "train", "", {"epochs": 2}, "zh", epochs_sent=1))
    store.save_job(JobRecord("x1", 5, Place(5), "xyz", "", {}, "zh"))
    # limits, /history, /queue and /cancel see posters only
    assert [r.job_id for r in store.active_jobs(5)] == ["p1"]
    assert [r.job_id for r in store.recent_jobs(5)] == ["p1"]
    assert store.jobs_since(5, 0) == 1
    assert [r.job_id for r in store.undelivered_jobs()] == ["p1"]
    followed = Store(tmp_path / "bot.db").undelivered_jobs(("train", "xyz"))
    assert [(r.job_id, r.epochs_sent) for r in followed] == [("t1", 1), ("x1", 0)]


def test_a_bot_db_from_before_training_was_followed_still_opens(tmp_path):
    import sqlite_utils

    old = sqlite_utils.Database(tmp_path / "bot.db")
    columns = {"job_id": str, "user_id": int, "chat_id": int, "thread_id": int}
    columns |= {"is_group": bool, "kind": str, "request": str, "params": str, "language": str}
    columns |= {"summary": str, "status_message_id": int, "state": str, "delivered": bool}
    columns |= {"seeds": str, "subseeds": str, "outputs": str, "created_at": float}
    old["jobs"].create(columns, pk="job_id")
    old["jobs"].insert(
        {"job_id": "j0", "user_id": 5, "chat_id": 5, "kind": "candidates"}
        | {
            "request": "雪地",
            "params": "{}",
            "language": "zh",
            "delivered": False,
            "seeds": "[]",
            "subseeds": "[]",
            "outputs": "[]",
            "created_at": 1.0,
            "state": "active",
        }
    )
    store = Store(tmp_path / "bot.db")
    store.save_job(JobRecord("t1", 5, Place(5), "train", "", {}, "zh", epochs_sent=2))
    assert store.job("j0").epochs_sent == 0 and store.job("t1").epochs_sent == 2


def test_templates_round_trip(tmp_path):
    store = Store(tmp_path / "bot.db")
    store.save_template(1, "圣诞", {"steps": 30, "style": "水彩"})
    assert store.template(1, "圣诞") == {"steps": 30, "style": "水彩"}
    assert store.template_names(1) == ["圣诞"]
    assert store.template(2, "圣诞") is None
    assert store.delete_template(1, "圣诞") and store.template_names(1) == []


def test_roles_from_config_and_runtime_changes(tmp_path):
    roles = Roles(AccessConfig(owners=[1], admins=[2], users=[3], groups=[-50]), Store(":memory:"))
    assert [roles.of(i) for i in (1, 2, 3, 4)] == [Role.OWNER, Role.ADMIN, Role.USER, Role.STRANGER]
    roles.allow(4)
    roles.allow(-60)
    assert roles.of(4) == Role.USER and roles.group_allowed(-60)
    roles.deny(3)
    roles.deny(1)  # owners are set in config and stay owners
    assert roles.of(3) == Role.STRANGER and roles.of(1) == Role.OWNER
    roles.promote(4)
    assert roles.admins() == [1, 2, 4]
    assert roles.may_ask(99, -50, is_group=True) and not roles.may_ask(99, -51, is_group=True)
