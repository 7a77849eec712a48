"""Writing a file so that a reader sees the old content or the new, never half of it: write a
temp file beside the target, then one rename (atomic on one filesystem). Stdlib only."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A temp path beside `target` to write (by any library) that replaces `target` when the
    block ends without an error. The folder is created; on an error `target` stays as it was and
    the temp file is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    scratch = Path(name)
    try:
        yield scratch
        os.replace(scratch, target)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as scratch:
        scratch.write_bytes(data)


def atomic_write_text(target: Path, text: str) -> None:
    """`text` as UTF-8."""
    with atomic_path(target) as scratch:
        scratch.write_text(text, encoding="utf-8")


def atomic_copy(source: Path, target: Path) -> None:
    """Copy `source`'s bytes over `target`, with a fresh modification time."""
    with atomic_path(target) as scratch:
        shutil.copyfile(source, scratch)
