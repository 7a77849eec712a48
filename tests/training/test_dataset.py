"""Dataset intake (hostile uploads), kohya layout, the report, chat sessions, `dataset check`."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from PIL import Image

from engine.training.buckets import choose_bucket, fit_to_bucket, make_buckets
from engine.training.intake import check_dataset, import_dataset
from engine.training.layout import DatasetError
from engine.training.sessions import add_session_file, finish_session, start_session
from tests.training.conftest import TRIGGER, mascot_images, write_dataset


def png_bytes(size=(64, 64), color=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A few hundred bytes that claim width x height pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def write_zip(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    """Members as (name, data, unix mode or None)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return path


GOOD = [("ok.png", png_bytes(), None), ("ok.txt", f"{TRIGGER}, solo".encode(), None)]

HOSTILE = {
    "traversal": ([("../evil.png", png_bytes(), None)], "../evil.png", "leaves the dataset"),
    "absolute path": ([("/tmp/evil.png", png_bytes(), None)], "/tmp/evil.png", "absolute path"),
    "symlink": ([("link.png", b"/etc/passwd", stat.S_IFLNK | 0o777)], "link.png", "symbolic link"),
    "device file": ([("dev.png", b"", stat.S_IFCHR | 0o644)], "dev.png", "special file"),
    "zip bomb": ([("bomb.png", b"\0" * 20_000_000, None)], "bomb.png", "zip bomb"),
    "decompression bomb": ([("huge.png", bomb_png(), None)], "huge.png", "decompression bomb"),
    "not an image": ([("fake.jpg", b"<html>hello</html>" * 10, None)], "fake.jpg", "by content"),
    "truncated image": ([("cut.png", png_bytes((256, 256))[:300], None)], "cut.png", "truncated"),
    "caption without image": ([("orphan.txt", b"lonely", None)], "orphan.txt", "without an image"),
    "gif renamed": (
        [("anim.png", b"GIF89a" + b"\0" * 40, None)],
        "anim.png",
        "not a PNG, JPEG or WEBP",
    ),
    "other file type": ([("run.sh", b"rm -rf /", None)], "run.sh", "not an image"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_each_hostile_upload_is_rejected_with_its_reason_and_leaves_nothing(
    training_config, tmp_path, case
):
    members, file, reason = HOSTILE[case]
    upload = write_zip(tmp_path / "upload.zip", GOOD + members)
    with pytest.raises(DatasetError) as raised:
        import_dataset(upload, "dada", training_config)
    rejections = {r.file: r.reason for r in raised.value.rejections}
    assert reason in rejections[file], rejections
    in_chinese = {r.file: r.reason_zh for r in raised.value.rejections}  # what the chat shows
    assert re.search(r"[\u4e00-\u9fff]", in_chinese[file]), in_chinese
    assert file in str(raised.value)
    assert list(training_config.datasets_dir.iterdir()) == []  # no partial dataset, no staging
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_too_many_files_is_rejected(training_config, tmp_path, with_config):
    config = with_config(training_config, "training", max_members=5)
    members = [(f"img{i}.png", png_bytes(), None) for i in range(8)]
    with pytest.raises(DatasetError, match=r"more than 5 files \(training.max_members\)"):
        import_dataset(write_zip(tmp_path / "many.zip", members), "dada", config)
    assert list(config.datasets_dir.iterdir()) == []


def test_total_unpacked_bytes_are_counted_while_reading(training_config, tmp_path, with_config):
    config = with_config(training_config, "training", max_unpacked_bytes=10_000)
    noisy = Image.effect_noise((128, 128), 60).convert("RGB")  # incompressible: ratio is fine
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    upload = write_zip(tmp_path / "big.zip", [("big.png", buffer.getvalue(), None)])
    with pytest.raises(DatasetError, match="max_unpacked_bytes"):
        import_dataset(upload, "dada", config)


def test_a_zipped_folder_becomes_a_clean_kohya_dataset(training_config, tmp_path):
    photo = Image.new("RGB", (80, 48), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° when shown
    exif[0x010F] = "SecretCam"  # camera make: metadata that must not survive
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", exif=exif)
    transparent = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(transparent, format="PNG")
    upload = write_zip(
        tmp_path / "set.zip",
        [
            ("my set/photo.jpg", buffer.getvalue(), None),
            ("my set/photo.caption", f"{TRIGGER}, grass\n".encode(), None),
            ("my set/cutout.png", transparent.getvalue(), None),
            ("__MACOSX/my set/._photo.jpg", b"junk", None),
        ],
    )
    report = import_dataset(upload, "dada", training_config, trigger=TRIGGER)
    folder = training_config.datasets_dir / "dada"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "10_dada",
        "10_dada/cutout.png",
        "10_dada/photo.png",
        "10_dada/photo.txt",
    ]
    with Image.open(folder / "10_dada/photo.png") as image:
        assert image.format == "PNG" and image.size == (48, 80)  # EXIF-transposed
        assert not image.getexif() and "exif" not in image.info
    with Image.open(folder / "10_dada/cutout.png") as image:
        assert image.mode == "RGB" and image.getpixel((5, 5)) == (255, 255, 255)  # onto white
    assert (folder / "10_dada/photo.txt").read_text() == f"{TRIGGER}, grass"
    assert len(report.images) == 2 and report.images[0].repeats == 10


def test_report_finds_what_designers_checked_by_eye(training_config, tmp_path):
    raw = write_dataset(tmp_path / "raw")
    (raw / "white0.txt").unlink()  # a missing caption
    (raw / "scene_ip0.txt").write_text("dadaknight, 草地, blue sky", encoding="utf-8")
    (raw / "copy.png").write_bytes((raw / "scene1.png").read_bytes())  # a near-duplicate
    (raw / "copy.txt").write_text("outdoors", encoding="utf-8")
    Image.new("RGB", (100, 70), (255, 255, 255)).save(raw / "odd.png")  # off the 64 grid
    (raw / "odd.txt").write_text("solo, white background", encoding="utf-8")  # no trigger

    report = check_dataset(raw, training_config, trigger=TRIGGER)
    data = report.to_dict()
    assert data["kinds"] == {"mascot_on_white": 3, "mascot_in_scene": 2, "scene": 3, "unknown": 0}
    assert "heuristic" in data["kinds_note"]
    assert data["missing_captions"] == [
        {
            "file": "10_dataset/white0.png",
            "stub": f"{TRIGGER}, solo, full body, simple background, white background",
        }
    ]
    without = {item["file"] for item in data["captions_without_trigger"]}
    assert without == {f"10_dataset/{n}.png" for n in ("copy", "odd", "scene0", "scene1")}
    assert data["non_english_captions"] == ["10_dataset/scene_ip0.png"]
    assert [(d["a"], d["b"]) for d in data["near_duplicates"]] == [
        ("10_dataset/copy.png", "10_dataset/scene1.png")
    ]
    assert len(data["too_small"]) == 8  # everything here is under 512 px
    assert data["resolution"]["not_multiple_of_64"] == 1
    odd = next(b for b in data["buckets"] if b["file"].endswith("odd.png"))
    assert odd["bucket"][0] % 64 == 0 and odd["bucket"][1] % 64 == 0
    text = report.to_text()
    for expected in ("白底IP图 3", "缺少说明", "没有触发词", "不是全英文", "几乎重复", "64 的倍数"):
        assert expected in text
    text = report.to_text(language="en")
    for expected in ("mascot on white 3", "Missing captions", "trigger word", "Near-duplicate"):
        assert expected in text
    assert not re.search(r"[\u4e00-\u9fff]", text.replace(TRIGGER, ""))  # no Chinese left
    json.dumps(data)
    assert list(training_config.datasets_dir.iterdir()) == []  # check keeps nothing


def test_buckets_follow_kohya():
    buckets = make_buckets(512, 256, 1024)
    assert (512, 512) in buckets and (384, 640) in buckets and (640, 384) in buckets
    assert all(w % 64 == 0 and h % 64 == 0 and w * h <= 512 * 512 for w, h in buckets)
    assert choose_bucket(500, 700, buckets) == (448, 576)
    assert fit_to_bucket(500, 700, (448, 576)) == (448, 627, 0, 25)


def test_chat_session_adds_files_one_by_one(training_config):
    session = start_session(training_config, "dada")
    for stem, image, caption in mascot_images(1):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        assert add_session_file(session, f"{stem}.png", buffer.getvalue(), training_config) == []
        add_session_file(session, f"{stem}.txt", caption.encode(), training_config)
    warnings = add_session_file(
        session, "photo.jpg", png_bytes(), training_config, caption="dadaknight, x", as_photo=True
    )
    assert "send images as files" in warnings[0]["text_en"]
    with pytest.raises(DatasetError, match=r"fake\.png: not a PNG, JPEG or WEBP"):
        add_session_file(session, "fake.png", b"not an image at all", training_config)
    with pytest.raises(DatasetError, match="absolute path"):
        add_session_file(session, "/etc/x.png", png_bytes(), training_config)
    add_session_file(session, "lost.txt", b"dadaknight", training_config)
    with pytest.raises(DatasetError, match=r"lost\.txt: caption without an image"):
        finish_session(session, "dada", training_config)
    (session / "lost.txt").unlink()
    report = finish_session(session, "dada", training_config, trigger=TRIGGER)
    assert len(report.images) == 4 and not session.exists()
    assert (training_config.datasets_dir / "dada/10_dada/photo.txt").read_text() == "dadaknight, x"


def test_a_folder_with_a_symlink_is_rejected(training_config, tmp_path):
    raw = write_dataset(tmp_path / "raw", count=1)
    (raw / "secret.png").symlink_to("/etc/passwd")
    with pytest.raises(DatasetError, match=r"secret\.png: symbolic link"):
        import_dataset(raw, "dada", training_config)


def test_an_existing_dataset_is_replaced_only_when_asked(training_config, tmp_path):
    raw = write_dataset(tmp_path / "raw", count=1)
    import_dataset(raw, "dada", training_config)
    with pytest.raises(ValueError, match="name: dataset 'dada' exists"):
        import_dataset(raw, "dada", training_config)
    assert len(import_dataset(raw, "dada", training_config, replace=True).images) == 3
    assert sorted(p.name for p in training_config.datasets_dir.iterdir()) == ["dada"]


def test_dataset_check_cli_prints_json(training_config, tmp_path, capsys):
    from posterbot.cli import main

    config_file = tmp_path / "config.toml"
    ip = dataclasses.asdict(training_config.ips[0])
    config_file.write_text(
        f'data_dir = "{training_config.data_dir}"\n[[ips]]\nname = "{ip["name"]}"\n'
        f'trigger = "{ip["trigger"]}"\n'
    )
    raw = write_dataset(tmp_path / "raw", count=1)
    assert (
        main(["--config", str(config_file), "dataset", "check", str(raw), "--json", "--ip", "dada"])
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert data["images"] == 3 and data["trigger"] == TRIGGER and data["ok"]
    assert main(["--config", str(config_file), "dataset", "check", str(raw)]) == 0
    assert "数据集" in capsys.readouterr().out
    # without --ip the default IP's trigger is the one captions are checked for
    assert main(["--config", str(config_file), "dataset", "check", str(raw), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trigger"] == TRIGGER
