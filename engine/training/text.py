"""Every chat text of dataset intake and the report, in Chinese and English, in one place.

`REJECTIONS`: why a file was refused, by stable code, as templates over the rejection's values;
`REPORT_TEXT`: the report's chat message (`DatasetReport.to_text`); the designers' own terms in
Chinese. The API sends both languages (`reason`/`reason_zh`, `text_en`/`text_zh`).
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("en", "zh")

REJECTIONS = {
    "absolute_path": {"en": "absolute path", "zh": "绝对路径"},
    "backslash": {"en": "backslash in the path", "zh": "路径里有反斜杠"},
    "leaves_folder": {
        "en": "path leaves the dataset folder (..)",
        "zh": "路径跑出了数据集文件夹（..）",
    },
    "bad_name": {"en": "empty or invalid name", "zh": "文件名为空或无效"},
    "too_many_files": {
        "en": "more than {limit} files (training.max_members)",
        "zh": "文件超过 {limit} 个（training.max_members）",
    },
    "too_large_unpacked": {
        "en": "upload unpacks to more than {limit} bytes (training.max_unpacked_bytes)",
        "zh": "解压后超过 {limit} 字节（training.max_unpacked_bytes）",
    },
    "zip_bomb": {
        "en": "compression ratio above {ratio}:1, a zip bomb (training.max_compression_ratio)",
        "zh": "压缩比超过 {ratio}:1，是 zip 炸弹（training.max_compression_ratio）",
    },
    "caption_too_long": {
        "en": "caption longer than {limit} bytes",
        "zh": "说明超过 {limit} 字节",
    },
    "symlink": {"en": "symbolic link", "zh": "符号链接"},
    "special_file": {"en": "device, pipe or other special file", "zh": "设备、管道等特殊文件"},
    "wrong_type": {
        "en": "not an image (.png .jpg .jpeg .webp) or caption (.txt .caption)",
        "zh": "不是图片（.png .jpg .jpeg .webp）也不是说明（.txt .caption）",
    },
    "outside_folder": {"en": "path leaves the dataset folder", "zh": "路径跑出了数据集文件夹"},
    "duplicate_member": {"en": "appears twice in the upload", "zh": "上传里出现了两次"},
    "unpack_failed": {"en": "cannot be unpacked ({detail})", "zh": "无法解包（{detail}）"},
    "encrypted": {
        "en": "encrypted (password-protected) member; send the zip without a password",
        "zh": "文件被加密（有密码）；请发送不带密码的 zip",
    },
    "path_conflict": {
        "en": "a file and a folder have the same path in the upload",
        "zh": "上传里有同一路径的文件和文件夹",
    },
    "too_many_pixels_total": {
        "en": "the images hold {pixels} pixels together, over {limit} (training.max_total_pixels);"
        " resize them (training uses at most about 1 megapixel of each) or send fewer",
        "zh": "图片合计 {pixels} 像素，超过 {limit}（training.max_total_pixels）；"
        "请先缩小图片（训练每张最多用约 100 万像素）或少发几张",
    },
    "too_many_pixels": {
        "en": "{width}x{height} is over {limit} pixels, a decompression bomb "
        "(training.max_image_pixels)",
        "zh": "{width}x{height} 超过 {limit} 像素，是解压炸弹（training.max_image_pixels）",
    },
    "not_an_image": {
        "en": "not a PNG, JPEG or WEBP image (by content)",
        "zh": "按内容看不是 PNG、JPEG 或 WEBP 图片",
    },
    "decompression_bomb": {
        "en": "too many pixels, a decompression bomb",
        "zh": "像素太多，是解压炸弹",
    },
    "damaged_image": {
        "en": "damaged or truncated image ({detail})",
        "zh": "图片损坏或不完整（{detail}）",
    },
    "caption_not_utf8": {"en": "caption is not UTF-8 text", "zh": "说明不是 UTF-8 文本"},
    "caption_not_text": {
        "en": "caption is not text (NUL bytes)",
        "zh": "说明不是文本（含 NUL 字节）",
    },
    "same_name": {
        "en": "same name as {other} (one image per caption)",
        "zh": "和 {other} 同名（一个说明只对应一张图）",
    },
    "orphan_caption": {"en": "caption without an image", "zh": "有说明但没有对应的图片"},
    "nested_too_deep": {
        "en": "nested too deep (use <repeats>_<concept>/<file>)",
        "zh": "文件夹套得太深（请用 <重复次数>_<概念>/<文件>）",
    },
    "no_images": {"en": "no images", "zh": "没有图片"},
    "not_one_by_one": {
        "en": "send files one by one, not in folders",
        "zh": "请逐个发送文件，不要带文件夹",
    },
    "image_exists": {
        "en": "an image with this name is already in the dataset",
        "zh": "数据集里已经有同名的图片",
    },
}

# Warnings for files that were kept (chat dataset sessions).
WARNINGS = {
    "photo_compressed": {
        "en": "{file}: Telegram compressed this photo to {width}x{height} (at most {limit} px); "
        "send images as files to keep full quality",
        "zh": "{file}：Telegram 把这张照片压缩成了 {width}x{height}（最长边 {limit} 像素）；"
        "请以文件方式发送图片，保留原画质",
    },
}


def say(catalog: dict[str, dict[str, str]], code: str, language: str, **values: Any) -> str:
    """The catalog entry `code` in `language` ("en" or "zh"), filled with `values`."""
    return catalog[code]["en" if language == "en" else "zh"].format(**values)


# The chat report's wording (`DatasetReport.to_text`); the designers' own terms in Chinese.
REPORT_TEXT = {
    "zh": {
        "kinds": {
            "mascot_on_white": "白底IP图",
            "mascot_in_scene": "场景IP结合图",
            "scene": "单独场景图",
            "unknown": "无法判断（缺说明）",
        },
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
