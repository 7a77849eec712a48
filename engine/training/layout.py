"""kohya's dataset layout: `<repeats>_<concept>/` folders of images with same-named `.txt`
captions, and the files and rejections of a dataset on its way into it.

A dataset is a folder under `<data_dir>/datasets/<name>/`: one folder per concept named
`<repeats>_<concept>` (`10_dada/`) holding images and their captions. Uploads are laid out in a
staging folder inside `datasets/` and renamed into place in one step (`publish`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.training.text import REJECTIONS, say
from posterbot.config import Config
from posterbot.errors import Refusal

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # what Pillow may decode; never guessed from the name
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
CAPTION_SUFFIXES = {".txt", ".caption"}  # .txt is what trainers use; .caption is kohya's default
DEFAULT_REPEATS = 10  # kohya's usual `10_concept`
REPEATS_FOLDER = re.compile(r"^(\d+)_(\S.*)$")
STAGING_PREFIX = ".incoming-"  # unpacking happens here, inside datasets/, then one rename


@dataclass(frozen=True)
class Rejection:
    file: str
    reason: str  # English, as the API and logs show it
    reason_zh: str = ""  # the same in Chinese, for the chat
    code: str = ""  # the reason's stable code (`engine.training.text.REJECTIONS`)

    @classmethod
    def of(cls, code: str, file: str, **values: Any) -> Rejection:
        english, chinese = (say(REJECTIONS, code, language, **values) for language in ("en", "zh"))
        return cls(file, english, chinese, code)


class DatasetError(ValueError):
    """An upload with rejected files; `rejections` names each file and why."""

    def __init__(self, rejections: list[Rejection]) -> None:
        listed = "; ".join(f"{r.file}: {r.reason}" for r in rejections[:20])
        more = f" (+{len(rejections) - 20} more)" if len(rejections) > 20 else ""
        super().__init__(f"dataset: {len(rejections)} file(s) rejected: {listed}{more}")
        self.rejections = rejections


def suffix_kind(name: str) -> str | None:
    suffix = Path(name).suffix.lower()
    return (
        "image" if suffix in IMAGE_SUFFIXES else "caption" if suffix in CAPTION_SUFFIXES else None
    )


def kohya_layout(staging: Path, concept: str, repeats: int) -> list[Rejection]:
    """Move files into `<repeats>_<concept>/` folders; reject orphans and deep nesting."""
    orphans = [
        Rejection.of("orphan_caption", caption.relative_to(staging).as_posix())
        for caption in sorted(staging.rglob("*.txt"))
        if not caption.with_suffix(".png").exists()
    ]
    if orphans:
        return orphans
    files = [p for p in staging.rglob("*") if p.is_file()]
    tops = {p.relative_to(staging).parts[0] for p in files}
    if len(tops) == 1 and all(len(p.relative_to(staging).parts) > 1 for p in files):
        (top,) = tops  # a zip of a folder: its one top folder is the dataset itself
        if not REPEATS_FOLDER.match(top):
            # Move the folder aside (beside the staging folder, so no name inside the upload,
            # `.flat` or any other, can collide), then its contents up into the staging folder.
            aside = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=staging.parent)) / top
            os.rename(staging / top, aside)
            for path in aside.iterdir():
                path.rename(staging / path.name)
            shutil.rmtree(aside.parent)
            files = [p for p in staging.rglob("*") if p.is_file()]
    rejections = []
    for path in files:
        parts = path.relative_to(staging).parts
        if len(parts) > 2:
            rejections.append(Rejection.of("nested_too_deep", "/".join(parts)))
            continue
        if len(parts) == 2 and REPEATS_FOLDER.match(parts[0]):
            continue
        folder = f"{repeats}_{parts[0] if len(parts) == 2 else concept}"
        (staging / folder).mkdir(exist_ok=True)
        path.rename(staging / folder / parts[-1])
    for path in staging.iterdir():
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    if not rejections and not any(staging.rglob("*.png")):
        rejections.append(Rejection.of("no_images", "(upload)"))
    return rejections


def check_name(name: str) -> str:
    if not re.fullmatch(r"[\w][\w.-]{0,63}", name):
        raise Refusal("name", f"{name!r} must be letters, digits, _ . - (at most 64)")
    return name


def new_staging(config: Config) -> Path:
    config.datasets_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=config.datasets_dir))


def publish(staging: Path, target: Path, replace: bool) -> None:
    """Rename `staging` to `target` (same filesystem: atomic); with `replace`, swap out the old."""
    if target.exists() and not replace:
        shutil.rmtree(staging)
        raise ValueError(f"name: dataset {target.name!r} exists (replace it or pick a new name)")
    old = None
    if target.exists():
        old = target.with_name(f"{STAGING_PREFIX}old-{target.name}")
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old)


def dataset_items(folder: Path) -> list[tuple[Path, int]]:
    """(image, repeats) for each image of a kohya-layout dataset, sorted by path."""
    items = []
    for concept in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        match = REPEATS_FOLDER.match(concept.name)
        if match is None:
            continue
        repeats = int(match.group(1))
        items += [
            (path, repeats)
            for path in sorted(concept.iterdir())
            if path.is_file() and suffix_kind(path.name) == "image"
        ]
    return items


def read_caption(image_path: Path) -> str | None:
    for suffix in (".txt", ".caption"):
        path = image_path.with_suffix(suffix)
        if path.is_file():
            return path.read_text(encoding="utf-8").strip()
    return None
