"""Training datasets: safe intake of untrusted uploads, kohya folder layout, the quality report.

A dataset is a folder under `<data_dir>/datasets/<name>/` in kohya's layout: one folder per
concept named `<repeats>_<concept>` (`10_dada/`) holding images and same-named `.txt` captions.

Intake (a zip sent in chat, a local folder, or files added one by one in a chat "dataset
session") treats every byte as hostile:

1. names: no absolute paths, no `..`, no backslashes, no symlinks or device files;
2. sizes: member count, total unpacked bytes counted while reading (zip headers can lie) and each
   member's compression ratio are limited (`[training]` in config);
3. images are recognised by content (PNG, JPEG, WEBP only), checked for decompression bombs
   (Pillow's warning is an error here), verified, reopened and fully decoded, EXIF-transposed,
   flattened onto white and re-saved as PNG without metadata;
4. captions must be UTF-8 text and belong to an image.

Everything is unpacked into a staging folder inside `datasets/` and renamed into place only when
no file was rejected, so a rejected upload leaves nothing behind. Every rejection names the file
and the reason.

The report (`analyse`) is what designers checked by eye: the three kinds of images a good set has
(mascot on white, mascot in a scene, scene only — a heuristic), sizes and the bucket/crop plan,
missing captions, captions without the trigger word, non-English captions, near-duplicates and
too-small images. `DatasetReport.to_dict()` is the JSON, `.to_text(min_side, language)` the chat
message (Chinese or English).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from posterbot.config import Config, TrainingConfig
from prompts.syntax import has_trigger

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")  # what Pillow may decode; never guessed from the name
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}
CAPTION_SUFFIXES = {".txt", ".caption"}  # .txt is what trainers use; .caption is kohya's default
# Archive litter from macOS and Windows, skipped silently rather than rejected.
IGNORED_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}
MAX_CAPTION_BYTES = 16 * 1024  # a caption is one line of tags; more is not a caption
READ_BLOCK = 1 << 16
DEFAULT_REPEATS = 10  # kohya's usual `10_concept`
REPEATS_FOLDER = re.compile(r"^(\d+)_(\S.*)$")
BUCKET_STEP = 64  # SD latents are 1/8 of the image and the UNet halves them 3 times
STAGING_PREFIX = ".incoming-"  # unpacking happens here, inside datasets/, then one rename
SESSIONS_FOLDER = ".sessions"
WHITE_LEVEL = 235  # a pixel this bright on all channels counts as white background
WHITE_BORDER_SHARE = 0.85  # share of border pixels that must be white for "mascot on white"
KIND_NOTE = (
    "heuristic: a mostly white border = mascot on white; otherwise a caption with the trigger "
    "word = mascot in a scene, without it = scene only; no caption = unknown"
)
KIND_NAMES_ZH = {
    "mascot_on_white": "白底IP图",
    "mascot_in_scene": "场景IP结合图",
    "scene": "单独场景图",
    "unknown": "无法判断（缺说明）",
}
# The chat report's wording (`DatasetReport.to_text`); the designers' own terms in Chinese.
REPORT_TEXT = {
    "zh": {
        "kinds": KIND_NAMES_ZH,
        "title": "数据集 {name}：{images} 张图",
        "rejected": "❌ 拒收 {count} 个文件：",
        "colon": "：",
        "sep": "，",
        "kinds_line": "图片类型（粗略估计：白边=白底，说明含触发词=有IP）：",
        "kind_missing": "⚠️ 没有{kind}：好的训练集三类都要有",
        "sizes": "尺寸：最小 {min}，最大 {max}，共 {distinct} 种",
        "off_grid": "⚠️ {count} 张不是 64 的倍数，训练时缩放并裁切：",
        "cropped": "（裁掉 {px} 像素）",
        "missing": "缺少说明",
        "stub": "（可用：{stub}）",
        "no_trigger": "说明里没有触发词（纯场景图可忽略；否则在开头加上）",
        "non_english": "说明不是全英文（含中文或全角标点）",
        "duplicates": "几乎重复的图（保留一张）",
        "duplicate": "{a} ≈ {b}（差 {d} 位）",
        "too_small": "太小（短边不足 {side}）",
        "more": "  · …还有 {count} 个",
        "fine": "✅ 没发现问题",
    },
    "en": {
        "kinds": {
            "mascot_on_white": "mascot on white",
            "mascot_in_scene": "mascot in a scene",
            "scene": "scene only",
            "unknown": "unknown (no caption)",
        },
        "title": "Dataset {name}: {images} images",
        "rejected": "❌ {count} file(s) refused:",
        "colon": ": ",
        "sep": ", ",
        "kinds_line": "Kinds (a rough guess: white border = on white, trigger in caption = "
        "mascot): ",
        "kind_missing": "⚠️ No {kind} images: a good set has all three kinds",
        "sizes": "Sizes: smallest {min}, largest {max}, {distinct} different",
        "off_grid": "⚠️ {count} not multiples of 64; scaled and cropped for training:",
        "cropped": " ({px} px cropped)",
        "missing": "Missing captions",
        "stub": " (suggested: {stub})",
        "no_trigger": "Captions without the trigger word (fine for scene-only images; "
        "otherwise put it first)",
        "non_english": "Captions not all in English (Chinese or full-width punctuation)",
        "duplicates": "Near-duplicate images (keep one)",
        "duplicate": "{a} ≈ {b} ({d} bits apart)",
        "too_small": "Too small (shorter side under {side})",
        "more": "  · …and {count} more",
        "fine": "✅ No problems found",
    },
}
LIST_IN_MESSAGE = 8  # items listed per section in the chat message; the JSON has all


@dataclass(frozen=True)
class Rejection:
    file: str
    reason: str  # English, as the API and logs show it
    reason_zh: str = ""  # the same in Chinese, for the chat


class DatasetError(ValueError):
    """An upload with rejected files; `rejections` names each file and why."""

    def __init__(self, rejections: list[Rejection]) -> None:
        listed = "; ".join(f"{r.file}: {r.reason}" for r in rejections[:20])
        more = f" (+{len(rejections) - 20} more)" if len(rejections) > 20 else ""
        super().__init__(f"dataset: {len(rejections)} file(s) rejected: {listed}{more}")
        self.rejections = rejections


class _Rejected(Exception):
    """One file refused (the reason in English and Chinese); caught and collected with its
    name."""

    def __init__(self, reason: str, reason_zh: str) -> None:
        super().__init__(reason)
        self.reason_zh = reason_zh

    def of(self, file: str) -> Rejection:
        return Rejection(file, str(self), self.reason_zh)


# --- 1-2. members: names, kinds and counted sizes ---------------------------------------------


@dataclass
class _Member:
    name: str  # path inside the upload, "/"-separated
    kind: str  # file | dir | symlink | special
    open: Callable[[], IO[bytes]]
    packed_size: int | None  # compressed size for zip members (for the ratio), else None


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    for info in archive.infolist():
        mode = info.external_attr >> 16  # Unix mode bits, when the zip was made on Unix
        if info.is_dir():
            kind = "dir"
        elif stat.S_ISLNK(mode):
            kind = "symlink"
        elif mode and stat.S_IFMT(mode) and not stat.S_ISREG(mode):
            kind = "special"
        else:
            kind = "file"
        yield _Member(info.filename, kind, lambda info=info: archive.open(info), info.compress_size)


def _folder_members(root: Path) -> Iterator[_Member]:
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs) + sorted(files):
            path = Path(folder) / name
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                continue
            kind = "symlink" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else "special"
            name = path.relative_to(root).as_posix()
            yield _Member(name, kind, lambda path=path: path.open("rb"), None)


def _safe_parts(name: str) -> list[str]:
    """The path parts of an upload member, or `_Rejected` saying why the name is unsafe."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise _Rejected("absolute path", "绝对路径")
    if "\\" in name:
        raise _Rejected("backslash in the path", "路径里有反斜杠")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _Rejected("path leaves the dataset folder (..)", "路径跑出了数据集文件夹（..）")
    if not parts or any("\x00" in part for part in parts):
        raise _Rejected("empty or invalid name", "文件名为空或无效")
    return parts


class _Budget:
    """Counts members and unpacked bytes across one upload (or one chat session)."""

    def __init__(self, limits: TrainingConfig, members: int = 0, unpacked: int = 0) -> None:
        self.limits = limits
        self.members = members
        self.unpacked = unpacked

    def add_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise _Rejected(
                f"more than {self.limits.max_members} files (training.max_members)",
                f"文件超过 {self.limits.max_members} 个（training.max_members）",
            )

    def copy(self, source: IO[bytes], target: Path, packed_size: int | None) -> None:
        """Copy `source` to `target`, counting bytes as they come (headers are not trusted)."""
        written = 0
        ratio = self.limits.max_compression_ratio
        with open(target, "xb") as out:
            while block := source.read(READ_BLOCK):
                written += len(block)
                self.unpacked += len(block)
                if self.unpacked > self.limits.max_unpacked_bytes:
                    raise _Rejected(
                        f"upload unpacks to more than {self.limits.max_unpacked_bytes} bytes "
                        "(training.max_unpacked_bytes)",
                        f"解压后超过 {self.limits.max_unpacked_bytes} 字节"
                        "（training.max_unpacked_bytes）",
                    )
                if packed_size is not None and written > ratio * max(packed_size, 1):
                    raise _Rejected(
                        f"compression ratio above {ratio}:1, a zip bomb "
                        "(training.max_compression_ratio)",
                        f"压缩比超过 {ratio}:1，是 zip 炸弹（training.max_compression_ratio）",
                    )
                out.write(block)
                if suffix_kind(target.name) == "caption" and written > MAX_CAPTION_BYTES:
                    raise _Rejected(
                        f"caption longer than {MAX_CAPTION_BYTES} bytes",
                        f"说明超过 {MAX_CAPTION_BYTES} 字节",
                    )


def suffix_kind(name: str) -> str | None:
    suffix = Path(name).suffix.lower()
    return (
        "image" if suffix in IMAGE_SUFFIXES else "caption" if suffix in CAPTION_SUFFIXES else None
    )


def _store(member: _Member, staging: Path, budget: _Budget) -> Path | None:
    """Copy one member under `staging` (None for ignored entries); raise `_Rejected`."""
    parts = _safe_parts(member.name)
    if IGNORED_PARTS & set(parts) or member.kind == "dir":
        return None
    budget.add_member()
    if member.kind == "symlink":
        raise _Rejected("symbolic link", "符号链接")
    if member.kind != "file":
        raise _Rejected("device, pipe or other special file", "设备、管道等特殊文件")
    if suffix_kind(parts[-1]) is None:
        raise _Rejected(
            "not an image (.png .jpg .jpeg .webp) or caption (.txt .caption)",
            "不是图片（.png .jpg .jpeg .webp）也不是说明（.txt .caption）",
        )
    target = staging.joinpath(*parts)
    if not target.resolve().is_relative_to(staging.resolve()):  # belt and braces after _safe_parts
        raise _Rejected("path leaves the dataset folder", "路径跑出了数据集文件夹")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise _Rejected("appears twice in the upload", "上传里出现了两次")
    try:
        with member.open() as source:
            budget.copy(source, target, member.packed_size)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise _Rejected(f"cannot be unpacked ({exc})", f"无法解包（{exc}）") from None
    return target


# --- 3-4. content: images and captions ---------------------------------------------------------


def clean_image(path: Path, limits: TrainingConfig) -> Path:
    """Decode `path` safely and rewrite it as a metadata-free RGB PNG; return the new path."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as probe:
                pixels = probe.width * probe.height
                if pixels > limits.max_image_pixels:
                    raise _Rejected(
                        f"{probe.width}x{probe.height} is over {limits.max_image_pixels} pixels, "
                        "a decompression bomb (training.max_image_pixels)",
                        f"{probe.width}x{probe.height} 超过 {limits.max_image_pixels} 像素，"
                        "是解压炸弹（training.max_image_pixels）",
                    )
                probe.verify()  # checks structure and checksums without decoding
            with Image.open(path, formats=IMAGE_FORMATS) as image:  # verify() used it up
                image.load()  # a full decode: truncated data fails here
                upright = ImageOps.exif_transpose(image)
                rgba = upright.convert("RGBA")
    except UnidentifiedImageError:
        raise _Rejected(
            "not a PNG, JPEG or WEBP image (by content)", "按内容看不是 PNG、JPEG 或 WEBP 图片"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _Rejected("too many pixels, a decompression bomb", "像素太多，是解压炸弹") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _Rejected(
            f"damaged or truncated image ({exc})", f"图片损坏或不完整（{exc}）"
        ) from None
    # Transparent cut-outs are the usual "mascot on white" source: flatten onto white.
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    cleaned = path.with_suffix(".png")
    scratch = path.with_name(path.name + ".clean")
    flat.save(scratch, format="PNG")  # no pnginfo/exif passed: metadata is dropped
    path.unlink()
    os.replace(scratch, cleaned)
    return cleaned


def clean_caption(path: Path) -> Path:
    """Check a caption is UTF-8 text; rewrite it as a one-line `.txt`; return the new path."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _Rejected("caption is not UTF-8 text", "说明不是 UTF-8 文本") from None
    if "\x00" in text:
        raise _Rejected("caption is not text (NUL bytes)", "说明不是文本（含 NUL 字节）")
    line = ", ".join(part.strip() for part in text.splitlines() if part.strip())
    cleaned = path.with_suffix(".txt")
    path.unlink()
    cleaned.write_text(line, encoding="utf-8")
    return cleaned


def _clean_stored(paths: list[Path], limits: TrainingConfig, staging: Path) -> list[Rejection]:
    rejections = []
    images: dict[Path, Path] = {}  # folder/stem → first image with it
    for path in paths:
        name = path.relative_to(staging).as_posix()
        key = path.with_suffix("")
        try:
            if suffix_kind(path.name) == "image":
                if key in images:
                    raise _Rejected(
                        f"same name as {images[key].name} (one image per caption)",
                        f"和 {images[key].name} 同名（一个说明只对应一张图）",
                    )
                images[key] = path
                clean_image(path, limits)
            else:
                clean_caption(path)
        except _Rejected as exc:
            rejections.append(exc.of(name))
    return rejections


# --- layout: kohya folders, staging, atomic rename ---------------------------------------------


def _kohya_layout(staging: Path, concept: str, repeats: int) -> list[Rejection]:
    """Move files into `<repeats>_<concept>/` folders; reject orphans and deep nesting."""
    orphans = [
        Rejection(
            caption.relative_to(staging).as_posix(),
            "caption without an image",
            "有说明但没有对应的图片",
        )
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
            for path in files:
                rest = path.relative_to(staging / top)
                target = staging / ".flat" / rest
                target.parent.mkdir(parents=True, exist_ok=True)
                path.rename(target)
            shutil.rmtree(staging / top)
            for path in (staging / ".flat").iterdir():
                path.rename(staging / path.name)
            (staging / ".flat").rmdir()
            files = [p for p in staging.rglob("*") if p.is_file()]
    rejections = []
    for path in files:
        parts = path.relative_to(staging).parts
        if len(parts) > 2:
            rejections.append(
                Rejection(
                    "/".join(parts),
                    "nested too deep (use <repeats>_<concept>/<file>)",
                    "文件夹套得太深（请用 <重复次数>_<概念>/<文件>）",
                )
            )
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
        rejections.append(Rejection("(upload)", "no images", "没有图片"))
    return rejections


def check_name(name: str) -> str:
    if not re.fullmatch(r"[\w][\w.-]{0,63}", name):
        raise ValueError(f"name: {name!r} must be letters, digits, _ . - (at most 64)")
    return name


def _staging(config: Config) -> Path:
    config.datasets_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=config.datasets_dir))


def _members(source: Path) -> tuple[Iterator[_Member], zipfile.ZipFile | None]:
    if source.is_dir():
        return _folder_members(source), None
    if source.suffix.lower() != ".zip" or not zipfile.is_zipfile(source):
        raise ValueError(f"source: {source} is neither a folder nor a zip file")
    archive = zipfile.ZipFile(source)
    return _zip_members(archive), archive


def _intake(source: Path, staging: Path, config: Config, concept: str) -> list[Rejection]:
    """Unpack and clean `source` into `staging`; return every rejection (empty = all good)."""
    members, archive = _members(source)
    budget = _Budget(config.training)
    rejections: list[Rejection] = []
    stored: list[Path] = []
    try:
        for member in members:
            try:
                target = _store(member, staging, budget)
            except _Rejected as exc:
                rejections.append(exc.of(member.name))
                if budget.members > config.training.max_members:
                    break  # the rest would be rejected for the same reason
                continue
            if target is not None:
                stored.append(target)
    finally:
        if archive is not None:
            archive.close()
    rejections += _clean_stored(stored, config.training, staging)
    if not rejections:
        rejections += _kohya_layout(staging, concept, DEFAULT_REPEATS)
    return rejections


def _publish(staging: Path, target: Path, replace: bool) -> None:
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


def import_dataset(
    source: str | Path,
    name: str,
    config: Config,
    trigger: str = "",
    replace: bool = False,
) -> DatasetReport:
    """Bring a zip or folder in as `<datasets_dir>/<name>/` and return its report.

    Raises `DatasetError` (listing every rejected file) and leaves nothing behind when any file
    is refused. Loose files go to `10_<name>/` (kohya's `<repeats>_<concept>`).
    """
    check_name(name)
    staging = _staging(config)
    try:
        rejections = _intake(Path(source), staging, config, concept=name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if rejections:
        shutil.rmtree(staging, ignore_errors=True)
        raise DatasetError(rejections)
    target = config.datasets_dir / name
    _publish(staging, target, replace)
    return analyse(target, config, trigger)


def check_dataset(source: str | Path, config: Config, trigger: str = "") -> DatasetReport:
    """The report for a zip or folder without keeping it (`posterbot dataset check`).

    Runs the same intake as `import_dataset` in a scratch folder; rejected files are listed in
    the report's `rejections` instead of raising.
    """
    staging = _staging(config)
    try:
        rejections = _intake(Path(source), staging, config, concept="dataset")
        report = analyse(staging, config, trigger)
        report.name = Path(source).name
        report.rejections = rejections
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --- chat dataset session: files one at a time -------------------------------------------------

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
) -> list[str]:
    """Add one uploaded image or `.txt` caption to a session; return warnings for the user.

    `caption` (a photo's chat caption) is saved as the image's `.txt`. `as_photo` = it came as a
    Telegram photo, which is recompressed: the warning asks for files instead. Raises
    `DatasetError` naming the file when it is refused (nothing of it is kept).
    """
    import io

    existing = [p for p in session.iterdir() if p.is_file()]
    budget = _Budget(config.training, len(existing), sum(p.stat().st_size for p in existing))
    member = _Member(filename, "file", lambda: io.BytesIO(data), None)
    stored: Path | None = None
    try:
        if len(_safe_parts(filename)) != 1:
            raise _Rejected("send files one by one, not in folders", "请逐个发送文件，不要带文件夹")
        stored = _store(member, session, budget)
        if stored is None:
            return []
        if suffix_kind(stored.name) == "caption":
            clean_caption(stored)
            return []
        if stored.with_suffix(".png").exists() and stored.suffix.lower() != ".png":
            raise _Rejected(
                "an image with this name is already in the dataset", "数据集里已经有同名的图片"
            )
        cleaned = clean_image(stored, config.training)
    except _Rejected as exc:
        if stored is not None:
            stored.unlink(missing_ok=True)
        raise DatasetError([exc.of(filename)]) from None
    if caption:
        cleaned.with_suffix(".txt").write_text(caption.strip(), encoding="utf-8")
    if not as_photo:
        return []
    with Image.open(cleaned) as image:
        return [
            f"{filename}: Telegram compressed this photo to {image.width}x{image.height} "
            f"(at most {TELEGRAM_PHOTO_SIDE} px); send images as files to keep full quality"
        ]


def finish_session(
    session: Path, name: str, config: Config, trigger: str = "", replace: bool = False
) -> DatasetReport:
    """`/dataset done`: lay the session out as `<datasets_dir>/<name>/` and return its report."""
    check_name(name)
    rejections = _kohya_layout(session, name, DEFAULT_REPEATS)
    if rejections:
        raise DatasetError(rejections)  # the session stays: the user can add the missing images
    target = config.datasets_dir / name
    _publish(session, target, replace)
    return analyse(target, config, trigger)


def discard_session(session: Path) -> None:
    shutil.rmtree(session, ignore_errors=True)


# --- buckets (kohya's aspect-ratio bucketing) ----------------------------------------------------


def make_buckets(
    resolution: int, min_reso: int, max_reso: int, step: int = BUCKET_STEP
) -> list[tuple[int, int]]:
    """kohya's bucket sizes: each side a multiple of `step`, area at most `resolution`²."""
    max_area = resolution * resolution
    side = resolution // step * step
    buckets = {(side, side)}
    for width in range(min_reso, max_reso + 1, step):
        height = min(max_reso, max_area // width // step * step)
        if height >= min_reso:
            buckets |= {(width, height), (height, width)}
    return sorted(buckets)


def choose_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> tuple[int, int]:
    """The bucket with the aspect ratio nearest the image's (ties: the larger bucket)."""
    ratio = width / height
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1] / ratio)), -b[0] * b[1]))


def fit_to_bucket(width: int, height: int, bucket: tuple[int, int]) -> tuple[int, int, int, int]:
    """Scale that covers `bucket`, then centre crop: (scaled w, scaled h, crop x, crop y)."""
    scale = max(bucket[0] / width, bucket[1] / height)
    scaled_w = max(bucket[0], round(width * scale))
    scaled_h = max(bucket[1], round(height * scale))
    return scaled_w, scaled_h, (scaled_w - bucket[0]) // 2, (scaled_h - bucket[1]) // 2


# --- the report ----------------------------------------------------------------------------------


@dataclass
class ImageEntry:
    file: str  # relative to the dataset folder
    width: int
    height: int
    repeats: int
    kind: str  # mascot_on_white | mascot_in_scene | scene | unknown
    caption: str | None
    bucket: tuple[int, int]
    cropped_px: int  # pixels cut off (scaled) to fit the bucket


@dataclass
class DatasetReport:
    name: str
    path: str
    trigger: str
    resolution: int
    images: list[ImageEntry] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    near_duplicates: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def kinds(self) -> dict[str, int]:
        counts = dict.fromkeys(KIND_NAMES_ZH, 0)
        for entry in self.images:
            counts[entry.kind] += 1
        return counts

    def missing_captions(self) -> list[dict[str, str]]:
        return [
            {"file": e.file, "stub": caption_stub(self.trigger, e.kind)}
            for e in self.images
            if e.caption is None
        ]

    def captions_without_trigger(self) -> list[dict[str, str]]:
        if not self.trigger:
            return []
        return [
            {"file": e.file, "suggestion": f"{self.trigger}, {e.caption}"}
            for e in self.images
            if e.caption is not None and not has_trigger(e.caption, self.trigger)
        ]

    def non_english_captions(self) -> list[str]:
        return [e.file for e in self.images if e.caption is not None and not e.caption.isascii()]

    def too_small(self, min_side: int) -> list[str]:
        return [e.file for e in self.images if min(e.width, e.height) < min_side]

    def off_grid(self) -> list[ImageEntry]:
        """Images whose size is not a multiple of 64: the trainer scales and crops them."""
        return [e for e in self.images if e.width % BUCKET_STEP or e.height % BUCKET_STEP]

    def resolution_stats(self) -> dict[str, Any]:
        if not self.images:
            return {}
        widths = [e.width for e in self.images]
        heights = [e.height for e in self.images]
        sizes = {f"{e.width}x{e.height}" for e in self.images}
        return {
            "min": [min(widths), min(heights)],
            "max": [max(widths), max(heights)],
            "median": [int(np.median(widths)), int(np.median(heights))],
            "distinct_sizes": len(sizes),
            "not_multiple_of_64": len(self.off_grid()),
        }

    def to_dict(self, min_side: int = 512) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "trigger": self.trigger,
            "images": len(self.images),
            "train_images": sum(e.repeats for e in self.images),
            "kinds": self.kinds,
            "kinds_note": KIND_NOTE,
            "resolution": self.resolution_stats(),
            "buckets": [
                {
                    "file": e.file,
                    "size": [e.width, e.height],
                    "bucket": list(e.bucket),
                    "cropped_px": e.cropped_px,
                }
                for e in self.images
            ],
            "missing_captions": self.missing_captions(),
            "captions_without_trigger": self.captions_without_trigger(),
            "non_english_captions": self.non_english_captions(),
            "near_duplicates": [
                {"a": a, "b": b, "distance": d} for a, b, d in self.near_duplicates
            ],
            "too_small": self.too_small(min_side),
            "min_image_side": min_side,
            "rejections": [asdict(r) for r in self.rejections],
            "ok": not self.rejections and bool(self.images),
        }

    def to_text(self, min_side: int = 512, language: str = "zh") -> str:
        """The report as a chat message in Chinese (`zh`) or English (`en`), at most a few
        hundred characters per part."""
        say = REPORT_TEXT["en" if language == "en" else "zh"]
        kind_names = say["kinds"]
        kinds = self.kinds
        lines = [say["title"].format(name=self.name, images=len(self.images))]
        problems = len(self.rejections)
        if self.rejections:
            lines.append(say["rejected"].format(count=len(self.rejections)))
            lines += [
                f"  · {r.file}{say['colon']}{r.reason_zh if language != 'en' else r.reason}"
                for r in self.rejections[:LIST_IN_MESSAGE]
            ]
        counts = say["sep"].join(
            f"{kind_names[k]} {n}" for k, n in kinds.items() if n or k != "unknown"
        )
        lines.append(say["kinds_line"] + counts)
        for kind in ("mascot_on_white", "mascot_in_scene", "scene"):
            if self.images and not kinds[kind]:
                problems += 1
                lines.append(say["kind_missing"].format(kind=kind_names[kind]))
        stats = self.resolution_stats()
        if stats:
            lines.append(
                say["sizes"].format(
                    min=f"{stats['min'][0]}x{stats['min'][1]}",
                    max=f"{stats['max'][0]}x{stats['max'][1]}",
                    distinct=stats["distinct_sizes"],
                )
            )
        off = self.off_grid()
        if off:
            problems += 1
            lines.append(say["off_grid"].format(count=len(off)))
            lines += [
                f"  · {e.file} {e.width}x{e.height} → {e.bucket[0]}x{e.bucket[1]}"
                + say["cropped"].format(px=e.cropped_px)
                for e in off[:LIST_IN_MESSAGE]
            ]
        sections = [
            (
                say["missing"],
                [
                    f"{m['file']}{say['stub'].format(stub=m['stub'])}"
                    for m in self.missing_captions()
                ],
            ),
            (
                say["no_trigger"],
                [f"{m['file']} → {m['suggestion']}" for m in self.captions_without_trigger()],
            ),
            (say["non_english"], self.non_english_captions()),
            (
                say["duplicates"],
                [say["duplicate"].format(a=a, b=b, d=d) for a, b, d in self.near_duplicates],
            ),
            (say["too_small"].format(side=min_side), self.too_small(min_side)),
        ]
        for title, items in sections:
            if items:
                problems += 1
                lines.append(f"⚠️ {title}{say['colon']}{len(items)}")
                lines += [f"  · {item}" for item in items[:LIST_IN_MESSAGE]]
                if len(items) > LIST_IN_MESSAGE:
                    lines.append(say["more"].format(count=len(items) - LIST_IN_MESSAGE))
        if not problems:
            lines.append(say["fine"])
        return "\n".join(lines)


def fix_captions(folder: Path, config: Config, trigger: str, fix: str) -> int:
    """Apply a fix the report offers; returns how many captions it wrote.

    "stubs": each image without a caption gets the suggested stub ("trigger, ..."). "trigger":
    captions without the trigger word get it first, except on scene-only images (by the report's
    heuristic), which must not teach the trigger word.
    """
    report = analyse(folder, config, trigger)
    if fix == "stubs":
        captions = {m["file"]: m["stub"] for m in report.missing_captions()}
    elif fix == "trigger":
        scenes = {e.file for e in report.images if e.kind == "scene"}
        captions = {
            m["file"]: m["suggestion"]
            for m in report.captions_without_trigger()
            if m["file"] not in scenes
        }
    else:
        raise ValueError(f"fix: {fix!r} is not one of stubs, trigger")
    for file, caption in captions.items():
        (Path(folder) / file).with_suffix(".txt").write_text(caption, encoding="utf-8")
    return len(captions)


def caption_stub(trigger: str, kind: str) -> str:
    head = trigger or "trigger"
    if kind == "mascot_on_white":
        return f"{head}, solo, full body, simple background, white background"
    return f"{head}, "


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: brightness gradients of a 9x8 thumbnail (robust to resizing)."""
    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=int)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def image_kind(image: Image.Image, caption: str | None, trigger: str) -> str:
    """Which of the three kinds an image looks like (see KIND_NOTE: a heuristic)."""
    pixels = np.asarray(image.convert("RGB").resize((64, 64)), dtype=int)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    white = (border >= WHITE_LEVEL).all(axis=1).mean()
    if white >= WHITE_BORDER_SHARE:
        return "mascot_on_white"
    if caption is None:
        return "unknown"
    return "mascot_in_scene" if trigger and has_trigger(caption, trigger) else "scene"


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


def analyse(
    folder: Path,
    config: Config,
    trigger: str = "",
    resolution: int = 512,
    min_bucket_reso: int = 256,
    max_bucket_reso: int = 1024,
) -> DatasetReport:
    """The quality report of a kohya-layout dataset folder (the bucket plan at `resolution`)."""
    folder = Path(folder)
    report = DatasetReport(folder.name, str(folder), trigger, resolution)
    buckets = make_buckets(resolution, min_bucket_reso, max_bucket_reso)
    hashes: list[tuple[str, int]] = []
    for path, repeats in dataset_items(folder):
        caption = read_caption(path)
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            width, height = image.size
            kind = image_kind(image, caption, trigger)
            hashes.append((path.relative_to(folder).as_posix(), dhash(image)))
        bucket = choose_bucket(width, height, buckets)
        scaled_w, scaled_h, _, _ = fit_to_bucket(width, height, bucket)
        report.images.append(
            ImageEntry(
                path.relative_to(folder).as_posix(),
                width,
                height,
                repeats,
                kind,
                caption,
                bucket,
                scaled_w * scaled_h - bucket[0] * bucket[1],
            )
        )
    limit = config.training.near_duplicate_distance
    for i, (name_a, hash_a) in enumerate(hashes):
        for name_b, hash_b in hashes[i + 1 :]:
            distance = (hash_a ^ hash_b).bit_count()
            if distance <= limit:
                report.near_duplicates.append((name_a, name_b, distance))
    return report
