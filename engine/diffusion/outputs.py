"""Saving results as WebUI does: `outputs/YYYY-MM-DD/NNNNN-SEED.png`, infotext inside (finished
posters: `outputs/posters/YYYY-MM-DD/NNNNN-<name>.png` beside their `.svg`)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

_NUMBERED = re.compile(r"^(\d{5})-")


def _next_number(folder: Path) -> int:
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
    return max(numbers, default=-1) + 1


def save_png(folder: Path, label: int | str, data: bytes, today: dt.date | None = None) -> Path:
    """Write PNG bytes under folder/YYYY-MM-DD/ as NNNNN-<label>.png (the seed, or a poster's
    name) with the next free number; return the path.

    Files are created exclusively, so several workers writing at once never overwrite each other.
    """
    day = folder / (today or dt.date.today()).isoformat()
    day.mkdir(parents=True, exist_ok=True)
    number = _next_number(day)
    while True:
        path = day / f"{number:05d}-{label}.png"
        try:
            with open(path, "xb") as file:
                file.write(data)
            return path
        except FileExistsError:
            number += 1
