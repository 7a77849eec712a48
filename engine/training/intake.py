"""Intake of untrusted uploads: a zip sent in chat or a local folder (and, through
`engine.training.sessions`, files added one by one) becomes a clean kohya-layout dataset.

Every byte is hostile:

1. names: no absolute paths, no `..`, no backslashes, no symlinks or device files;
2. sizes: member count, total unpacked bytes counted while reading (zip headers can lie) and each
   member's compression ratio are limited (`[training]` in config); encrypted members and a
   file where a folder must go (`a.png` and `a.png/b.png`) are refused;
3. the pixels all images declare in their headers are summed before any is decoded and refused
   past `training.max_total_pixels` (decoding is what costs: seconds per 8000×8000 image);
4. images are recognised by content (PNG, JPEG, WEBP only), checked for decompression bombs
   (Pillow's warning is an error here), verified, reopened and fully decoded, EXIF-transposed,
   flattened onto white and re-saved as PNG without metadata;
5. captions must be UTF-8 text and belong to an image.

Everything is unpacked into a staging folder inside `datasets/` and renamed into place only when
no file was rejected, so a rejected upload leaves nothing behind. Every rejection names the file
and the reason, by code, in English and Chinese.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageOps, UnidentifiedImageError

from engine.diffusion.registry import sha256_file
from engine.training.layout import (
    DEFAULT_REPEATS,
    IMAGE_FORMATS,
    DatasetError,
    Rejection,
    check_name,
    kohya_layout,
    new_staging,
    publish,
    suffix_kind,
)
from engine.training.report import DatasetReport, analyse
from posterbot.config import Config, TrainingConfig
from posterbot.files import atomic_path

# Archive litter from macOS and Windows, skipped silently rather than rejected.
IGNORED_PARTS = {"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"}
MAX_CAPTION_BYTES = 16 * 1024  # a caption is one line of tags; more is not a caption
READ_BLOCK = 1 << 16


class Rejected(Exception):
    """One file refused, by the reason's code (`engine.training.text.REJECTIONS`) and values;
    caught and collected with the file's name."""

    def __init__(self, code: str, **values: Any) -> None:
        super().__init__(code)
        self.code = code
        self.values = values

    def of(self, file: str) -> Rejection:
        return Rejection.of(self.code, file, **self.values)


# --- 1-2. members: names, kinds and counted sizes ---------------------------------------------


@dataclass
class Member:
    name: str  # path inside the upload, "/"-separated
    kind: str  # file | dir | symlink | special
    open: Callable[[], IO[bytes]]
    packed_size: int | None  # compressed size for zip members (for the ratio), else None
    encrypted: bool = False  # a password-protected zip member (never asked for its password)


def _zip_members(archive: zipfile.ZipFile) -> Iterator[Member]:
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
        encrypted = bool(info.flag_bits & 0x1)  # bit 0 of the general purpose flags
        opener = lambda info=info: archive.open(info)  # noqa: E731
        yield Member(info.filename, kind, opener, info.compress_size, encrypted)


def _folder_members(root: Path) -> Iterator[Member]:
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs) + sorted(files):
            path = Path(folder) / name
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                continue
            kind = "symlink" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else "special"
            name = path.relative_to(root).as_posix()
            yield Member(name, kind, lambda path=path: path.open("rb"), None)


def safe_parts(name: str) -> list[str]:
    """The path parts of an upload member, or `Rejected` saying why the name is unsafe."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise Rejected("absolute_path")
    if "\\" in name:
        raise Rejected("backslash")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise Rejected("leaves_folder")
    if not parts or any("\x00" in part for part in parts):
        raise Rejected("bad_name")
    return parts


class Budget:
    """Counts members and unpacked bytes across one upload (or one chat session)."""

    def __init__(self, limits: TrainingConfig, members: int = 0, unpacked: int = 0) -> None:
        self.limits = limits
        self.members = members
        self.unpacked = unpacked

    def add_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise Rejected("too_many_files", limit=self.limits.max_members)

    def copy(self, source: IO[bytes], target: Path, packed_size: int | None) -> None:
        """Copy `source` to `target`, counting bytes as they come (headers are not trusted)."""
        written = 0
        ratio = self.limits.max_compression_ratio
        with open(target, "xb") as out:
            while block := source.read(READ_BLOCK):
                written += len(block)
                self.unpacked += len(block)
                if self.unpacked > self.limits.max_unpacked_bytes:
                    raise Rejected("too_large_unpacked", limit=self.limits.max_unpacked_bytes)
                if packed_size is not None and written > ratio * max(packed_size, 1):
                    raise Rejected("zip_bomb", ratio=ratio)
                out.write(block)
                if suffix_kind(target.name) == "caption" and written > MAX_CAPTION_BYTES:
                    raise Rejected("caption_too_long", limit=MAX_CAPTION_BYTES)


def store(member: Member, staging: Path, budget: Budget) -> Path | None:
    """Copy one member under `staging` (None for ignored entries); raise `Rejected`."""
    parts = safe_parts(member.name)
    if IGNORED_PARTS & set(parts) or member.kind == "dir":
        return None
    budget.add_member()
    if member.kind == "symlink":
        raise Rejected("symlink")
    if member.kind != "file":
        raise Rejected("special_file")
    if suffix_kind(parts[-1]) is None:
        raise Rejected("wrong_type")
    if member.encrypted:
        raise Rejected("encrypted")
    target = staging.joinpath(*parts)
    if not target.resolve().is_relative_to(staging.resolve()):  # belt and braces after _safe_parts
        raise Rejected("outside_folder")
    try:  # `a.png` then `a.png/b.png` (or the other way round): a file where a folder must go
        target.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise Rejected("path_conflict") from None
    if target.is_dir():
        raise Rejected("path_conflict")
    if target.exists():
        raise Rejected("duplicate_member")
    try:
        with member.open() as source:
            budget.copy(source, target, member.packed_size)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise Rejected("unpack_failed", detail=exc) from None
    except RuntimeError as exc:  # zipfile's "password required" for an entry flagged later
        raise Rejected("encrypted" if "encrypted" in str(exc) else "unpack_failed") from None
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
                    raise Rejected(
                        "too_many_pixels",
                        width=probe.width,
                        height=probe.height,
                        limit=limits.max_image_pixels,
                    )
                probe.verify()  # checks structure and checksums without decoding
            with Image.open(path, formats=IMAGE_FORMATS) as image:  # verify() used it up
                image.load()  # a full decode: truncated data fails here
                upright = ImageOps.exif_transpose(image)
                rgba = upright.convert("RGBA")
    except UnidentifiedImageError:
        raise Rejected("not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Rejected("decompression_bomb") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise Rejected("damaged_image", detail=exc) from None
    # Transparent cut-outs are the usual "mascot on white" source: flatten onto white.
    flat = Image.new("RGB", rgba.size, (255, 255, 255))
    flat.paste(rgba, mask=rgba.getchannel("A"))
    cleaned = path.with_suffix(".png")
    with atomic_path(cleaned) as scratch:
        flat.save(scratch, format="PNG")  # no pnginfo/exif passed: metadata is dropped
        if path != cleaned:
            path.unlink()
    return cleaned


def clean_caption(path: Path) -> Path:
    """Check a caption is UTF-8 text; rewrite it as a one-line `.txt`; return the new path."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Rejected("caption_not_utf8") from None
    if "\x00" in text:
        raise Rejected("caption_not_text")
    line = ", ".join(part.strip() for part in text.splitlines() if part.strip())
    cleaned = path.with_suffix(".txt")
    path.unlink()
    cleaned.write_text(line, encoding="utf-8")
    return cleaned


def header_pixels(path: Path) -> int:
    """Width × height an image's header declares, read without decoding it (0 when it is not
    an image we read: `clean_image` then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as probe:  # parses the header only
                return probe.width * probe.height
    except Image.DecompressionBombError:
        return 0  # over Pillow's own limit: clean_image rejects it by itself
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError):
        return 0


def check_total_pixels(paths: list[Path], limits: TrainingConfig, already: int = 0) -> int:
    """Refuse the upload when its images declare more than `training.max_total_pixels`
    together (`already`: a session's images so far); returns the total."""
    total = already + sum(header_pixels(p) for p in paths if suffix_kind(p.name) == "image")
    if total > limits.max_total_pixels:
        raise Rejected("too_many_pixels_total", pixels=total, limit=limits.max_total_pixels)
    return total


def _clean_stored(paths: list[Path], limits: TrainingConfig, staging: Path) -> list[Rejection]:
    try:  # before any image is decoded: decoding is what costs
        check_total_pixels(paths, limits)
    except Rejected as exc:
        return [exc.of("(upload)")]
    rejections = []
    images: dict[Path, Path] = {}  # folder/stem → first image with it
    for path in paths:
        name = path.relative_to(staging).as_posix()
        key = path.with_suffix("")
        try:
            if suffix_kind(path.name) == "image":
                if key in images:
                    raise Rejected("same_name", other=images[key].name)
                images[key] = path
                clean_image(path, limits)
            else:
                clean_caption(path)
        except Rejected as exc:
            rejections.append(exc.of(name))
    return rejections


def _members(source: Path) -> tuple[Iterator[Member], zipfile.ZipFile | None]:
    if source.is_dir():
        return _folder_members(source), None
    if source.suffix.lower() != ".zip" or not zipfile.is_zipfile(source):
        raise ValueError(f"source: {source} is neither a folder nor a zip file")
    archive = zipfile.ZipFile(source)
    return _zip_members(archive), archive


def _intake(source: Path, staging: Path, config: Config, concept: str) -> list[Rejection]:
    """Unpack and clean `source` into `staging`; return every rejection (empty = all good)."""
    members, archive = _members(source)
    budget = Budget(config.training)
    rejections: list[Rejection] = []
    stored: list[Path] = []
    try:
        for member in members:
            try:
                target = store(member, staging, budget)
            except Rejected as exc:
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
        rejections += kohya_layout(staging, concept, DEFAULT_REPEATS)
    return rejections


def source_digest(source: str | Path) -> str:
    """sha256 of a zip's bytes, or of a folder's file names and contents: what `train
    --dataset PATH` names the imported dataset by, so the same files are imported once."""
    source = Path(source)
    if source.is_file():
        return sha256_file(source)
    digest = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(source).as_posix()}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()


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
    staging = new_staging(config)
    try:
        rejections = _intake(Path(source), staging, config, concept=name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if rejections:
        shutil.rmtree(staging, ignore_errors=True)
        raise DatasetError(rejections)
    target = config.datasets_dir / name
    publish(staging, target, replace)
    return analyse(target, config, trigger)


def check_dataset(source: str | Path, config: Config, trigger: str = "") -> DatasetReport:
    """The report for a zip or folder without keeping it (`posterbot dataset check`).

    Runs the same intake as `import_dataset` in a scratch folder; rejected files are listed in
    the report's `rejections` instead of raising.
    """
    staging = new_staging(config)
    try:
        rejections = _intake(Path(source), staging, config, concept="dataset")
        report = analyse(staging, config, trigger)
        report.name = Path(source).name
        report.rejections = rejections
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)
