"""The training routes over HTTP (in-process app, no workers): dataset upload and check, hostile
zips, chat dataset sessions, LoRA versions (register, promote, rollback, export), and the checks
of train and xyz jobs at submit."""

from __future__ import annotations

import io
import zipfile

import pytest
from aiohttp import FormData

from engine.service import training_views
from tests.engine.conftest import AUTH
from tests.fakes.models import write_lora_pair
from tests.training.conftest import config_for, mascot_images, mascot_zip


@pytest.fixture
def config(engine_config, tmp_path):
    return config_for(engine_config, tmp_path / "data")


async def test_an_uploaded_zip_becomes_a_dataset_with_a_chinese_report(client, config):
    response = await client.post("/v1/datasets?name=dada&ip=dada", data=mascot_zip(), headers=AUTH)
    assert response.status == 201, await response.text()
    body = await response.json()
    assert body["report"]["images"] == 3 and body["report"]["ok"]
    assert "数据集 dada：3 张图" in body["text_zh"]
    assert (config.datasets_dir / "dada").is_dir()


async def test_a_hostile_zip_is_refused_with_each_reason_and_leaves_nothing(client, config):
    hostile = mascot_zip([("../escape.txt", b"x"), ("fake.png", b"not an image")])
    response = await client.post("/v1/datasets?name=dada", data=hostile, headers=AUTH)
    assert response.status == 400
    body = await response.json()
    reasons = {r["file"]: r["reason"] for r in body["rejections"]}
    assert set(reasons) == {"../escape.txt", "fake.png"}
    assert body["error"].startswith("dataset:")
    assert not [p for p in config.datasets_dir.iterdir() if not p.name.startswith(".")]
    check = await client.post("/v1/datasets/check", data=hostile, headers=AUTH)
    assert check.status == 200
    assert len((await check.json())["report"]["rejections"]) == 2


async def test_an_upload_past_the_limit_is_413_with_the_reason(client, monkeypatch):
    monkeypatch.setattr(training_views, "MAX_ZIP_BYTES", 100)
    response = await client.post("/v1/datasets/check", data=mascot_zip(), headers=AUTH)
    assert response.status == 413
    assert "Telegram's document limit" in (await response.json())["error"]


async def test_a_chat_session_warns_about_photos_and_ends_in_a_report(client, config):
    started = await client.post("/v1/dataset-sessions", json={"ip": "dada"}, headers=AUTH)
    session = (await started.json())["session"]
    for stem, image, caption in mascot_images(1):
        jpeg = io.BytesIO()
        image.save(jpeg, format="JPEG")
        form = FormData()
        form.add_field("file", jpeg.getvalue(), filename=f"{stem}.jpg")
        form.add_field("caption", caption)
        form.add_field("as_photo", "1" if stem == "white0" else "0")
        added = await client.post(f"/v1/dataset-sessions/{session}/files", data=form, headers=AUTH)
        assert added.status == 200, await added.text()
        warnings = (await added.json())["warnings"]
        assert bool(warnings) == (stem == "white0")
    finished = await client.post(
        f"/v1/dataset-sessions/{session}/finish", json={"name": "chat"}, headers=AUTH
    )
    assert finished.status == 201
    assert (await finished.json())["report"]["images"] == 3
    gone = await client.delete(f"/v1/dataset-sessions/{session}", headers=AUTH)
    assert gone.status == 404


async def test_fixes_write_caption_stubs_and_the_trigger(client, config):
    members = []
    for stem, image, _ in mascot_images(1):
        png = io.BytesIO()
        image.save(png, format="PNG")
        members.append((f"{stem}.png", png.getvalue()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    await client.post("/v1/datasets?name=bare&ip=dada", data=buffer.getvalue(), headers=AUTH)
    fixed = await client.post(
        "/v1/datasets/bare/fix", json={"ip": "dada", "fix": "stubs"}, headers=AUTH
    )
    body = await fixed.json()
    assert body["changed"] == 3 and not body["report"]["missing_captions"]


async def test_versions_register_promote_rollback_and_export(client, config, tmp_path):
    from diffusers import DiffusionPipeline

    pickle = await client.post(
        "/v1/versions?ip=dada&filename=evil.ckpt", data=b"\x80\x04pickle", headers=AUTH
    )
    assert pickle.status == 400 and "pickle" in (await pickle.json())["error"]
    hashes = []
    scratch = DiffusionPipeline.from_pretrained(config.models.base)
    for path in write_lora_pair(scratch, tmp_path, "outside"):  # two layouts, two files
        registered = await client.post(
            f"/v1/versions?ip=dada&filename={path.name}", data=path.read_bytes(), headers=AUTH
        )
        assert registered.status == 201, await registered.text()

    async def poster_lora_hash() -> str:
        loras = (await (await client.get("/v1/loras", headers=AUTH)).json())["loras"]
        return next(lora["hash"] for lora in loras if lora["name"] == "dada_lora")

    for version in ("v1", "v2", "v1"):
        promoted = await client.post(
            "/v1/versions/promote", json={"ip": "dada", "version": version}, headers=AUTH
        )
        assert promoted.status == 200
        hashes.append(await poster_lora_hash())
    assert hashes[0] != hashes[1] and hashes[0] == hashes[2]
    rolled = await client.post("/v1/versions/rollback", json={"ip": "dada"}, headers=AUTH)
    assert (await rolled.json())["version"]["name"] == "dada-v2"
    assert await poster_lora_hash() == hashes[1]
    listed = (await (await client.get("/v1/versions?ip=dada", headers=AUTH)).json())["versions"]
    assert [v["name"] for v in listed if v["promoted"]] == ["dada-v2"]
    exported = await client.get("/v1/versions/dada-v1/file", headers=AUTH)
    assert exported.status == 200
    assert (await exported.read())[:8] == (
        config.loras_dir / "dada" / "dada-v1.safetensors"
    ).read_bytes()[:8]


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        (
            "train",
            {"ip": "dada", "dataset": "dada", "network_dim": 8, "network_alpha": 16},
            "network_alpha",
        ),
        ("train", {"ip": "dada", "dataset": "dada", "resolution": 500}, "resolution"),
        ("train", {"ip": "dada", "dataset": "missing"}, "dataset"),
        ("xyz", {"ip": "dada", "axes": {"colour": "red"}}, "colour"),
        ("xyz", {"ip": "dada", "axes": {"versions": "v9"}}, "lora"),
    ],
)
async def test_train_and_xyz_jobs_are_checked_at_submit(client, kind, params, field):
    await client.post("/v1/datasets?name=dada&ip=dada", data=mascot_zip(), headers=AUTH)
    body = {"kind": kind, "params": params, "user": "tg:1", "priority": "training"}
    response = await client.post("/v1/jobs", json=body, headers=AUTH)
    assert response.status == 400
    assert (await response.json())["error"].startswith(f"{field}:")


async def test_a_checked_train_job_is_queued_with_every_parameter(client):
    await client.post("/v1/datasets?name=dada&ip=dada", data=mascot_zip(), headers=AUTH)
    body = {
        "kind": "train",
        "params": {"ip": "dada", "dataset": "dada", "epochs": "3", "mixed_precision": "no"},
        "user": "tg:1",
        "priority": "training",
    }
    job = await (await client.post("/v1/jobs", json=body, headers=AUTH)).json()
    assert job["kind"] == "train" and job["priority"] == "training"
    assert job["params"]["epochs"] == 3 and job["params"]["network_dim"] == 32
