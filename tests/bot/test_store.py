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
