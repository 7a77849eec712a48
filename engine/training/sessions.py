"""Chat dataset sessions: `/dataset new <ip>`, then images and captions one message at a time,
then `/dataset done <name>` lays them out as a dataset.

Each file goes through the same checks as a zip member (`engine.training.intake`), against the
session's running totals.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image

from engine.training.intake import (
    Budget,
    Member,
    Rejected,
    check_total_pixels,
    clean_caption,
    clean_image,
    header_pixels,
    safe_parts,
    store,
)
from engine.training.layout import (
    DEFAULT_REPEATS,
    DatasetError,
    check_name,
    kohya_layout,
    publish,
    suffix_kind,
)
from engine.training.report import DatasetReport, analyse
from engine.training.text import LANGUAGES, WARNINGS, say
from posterbot.config import Config

SESSIONS_FOLDER = ".sessions"  # under datasets/: one staging folder per session
# Telegram re-encodes photos (not documents) to JPEG with the long side at most 1280 px.
TELEGRAM_PHOTO_SIDE = 1280


def start_session(config: Config, ip: str) -> Path:
    """A new staging folder for `/dataset new <ip>`; files are added with `add_session_file`."""
    check_name(ip)
    folder = config.datasets_dir / SESSIONS_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{ip}-", dir=folder))


def add_session_file(
    session: Path,
    filename: str,
    data: bytes,
    config: Config,
    caption: str | None = None,
    as_photo: bool = False,
) -> list[dict[str, Any]]:
    """Add one uploaded image or `.txt` caption to a session; return warnings for the user
    (`notice`s).

    `caption` (a photo's chat caption) is saved as the image's `.txt`. `as_photo` = it came as a
    Telegram photo, which is recompressed: the warning asks for files instead. Raises
    `DatasetError` naming the file when it is refused (nothing of it is kept).
    """
    existing = [p for p in session.iterdir() if p.is_file()]
    budget = Budget(config.training, len(existing), sum(p.stat().st_size for p in existing))
    member = Member(filename, "file", lambda: io.BytesIO(data), None)
    stored: Path | None = None
    try:
        if len(safe_parts(filename)) != 1:
            raise Rejected("not_one_by_one")
        stored = store(member, session, budget)
        if stored is None:
            return []
        if suffix_kind(stored.name) == "caption":
            clean_caption(stored)
            return []
        if stored.with_suffix(".png").exists() and stored.suffix.lower() != ".png":
            raise Rejected("image_exists")
        so_far = sum(header_pixels(p) for p in existing if suffix_kind(p.name) == "image")
        check_total_pixels([stored], config.training, so_far)
        cleaned = clean_image(stored, config.training)
    except Rejected as exc:
        if stored is not None:
            stored.unlink(missing_ok=True)
        raise DatasetError([exc.of(filename)]) from None
    if caption:
        cleaned.with_suffix(".txt").write_text(caption.strip(), encoding="utf-8")
    if not as_photo:
        return []
    with Image.open(cleaned) as image:
        values = {"file": filename, "width": image.width, "height": image.height}
    return [notice("photo_compressed", limit=TELEGRAM_PHOTO_SIDE, **values)]


def notice(code: str, **values: Any) -> dict[str, Any]:
    """A warning for the user: its code and values, and its text in each language."""
    texts = {f"text_{language}": say(WARNINGS, code, language, **values) for language in LANGUAGES}
    return {"code": code, "values": values, **texts}


def finish_session(
    session: Path, name: str, config: Config, trigger: str = "", replace: bool = False
) -> DatasetReport:
    """`/dataset done`: lay the session out as `<datasets_dir>/<name>/` and return its report."""
    check_name(name)
    rejections = kohya_layout(session, name, DEFAULT_REPEATS)
    if rejections:
        raise DatasetError(rejections)  # the session stays: the user can add the missing images
    target = config.datasets_dir / name
    publish(session, target, replace)
    return analyse(target, config, trigger)


def discard_session(session: Path) -> None:
    shutil.rmtree(session, ignore_errors=True)
