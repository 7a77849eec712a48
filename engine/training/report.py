"""The dataset report: what designers checked by eye, as data (`to_dict`) and as a chat message
(`to_text`, Chinese or English).

The three kinds of images a good set has (mascot on white, mascot in a scene, scene only — a
heuristic), sizes and the bucket/crop plan, missing captions, captions without the trigger word,
non-English captions, near-duplicates and too-small images. `fix_captions` applies the fixes it
offers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.training.buckets import BUCKET_STEP, choose_bucket, fit_to_bucket, make_buckets
from engine.training.layout import IMAGE_FORMATS, Rejection, dataset_items, read_caption
from engine.training.text import REPORT_TEXT
from posterbot.config import Config
from prompts.syntax import has_trigger

KINDS = ("mascot_on_white", "mascot_in_scene", "scene", "unknown")
WHITE_LEVEL = 235  # a pixel this bright on all channels counts as white background
WHITE_BORDER_SHARE = 0.85  # share of border pixels that must be white for "mascot on white"
KIND_NOTE = (
    "heuristic: a mostly white border = mascot on white; otherwise a caption with the trigger "
    "word = mascot in a scene, without it = scene only; no caption = unknown"
)
LIST_IN_MESSAGE = 8  # items listed per section in the chat message; the JSON has all


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
        counts = dict.fromkeys(KINDS, 0)
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
