"""The poster's files: PNG with its chunks and dpi, an editable SVG, and text that reads back."""

from __future__ import annotations

import unicodedata
import xml.etree.ElementTree as ET
from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from poster.compose import Copy, compose_poster
from poster.output import png_bytes, read_poster_chunk, svg_text
from tests.poster.conftest import mascot_picture

SVG = "{http://www.w3.org/2000/svg}"
TITLES = [
    "圣诞快乐",
    "新店开业",
    "双十一狂欢节",
    "会员日全场8.8折",
    "Summer Sale",
    "冬至快乐！",
    "满299减50",
    "春节不打烊",
    "达达送福到家",
    "618年中大促",
    "招募骑手",
    "安全第一",
    "中秋节快乐",
    "Happy New Year",
    "9:30准时开抢",
    "元宵节猜灯谜",
    "下单立减10%",
    "周年庆第1波",
    "扫码领红包",
    "国庆七天乐",
]
assert len(TITLES) == 20 and all(2 <= len(title) <= 16 for title in TITLES)


def normalised(text: str) -> str:
    """What a reader compares: full/half-width forms unified, spaces ignored."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def test_png_keeps_the_infotext_adds_the_poster_chunk_and_print_dpi():
    copy = Copy("圣诞快乐", "达达送福")
    poster = compose_poster(mascot_picture(), copy, 2480, 3508)
    data = png_bytes(poster, copy, parameters="dadaknight\nSteps: 20, Seed: 1", dpi=300)
    with Image.open(BytesIO(data)) as image:
        assert image.size == (2480, 3508)
        assert image.text["parameters"].startswith("dadaknight")
        assert round(image.info["dpi"][0]) == 300
    chunk = read_poster_chunk(data)
    assert chunk["copy"]["title"] == "圣诞快乐" and chunk["layout"] == poster.layout
    assert {e["kind"] for e in chunk["elements"]} >= {"title", "subtitle"}
    assert len(chunk["source_sha256"]) == 64


def test_the_svg_parses_names_the_font_and_keeps_the_copy_as_text():
    copy = Copy("圣诞快乐 & 新年好", "达达 <送福>", "立即下单")
    poster = compose_poster(mascot_picture(), copy, 1080, 1920)
    root = ET.fromstring(svg_text(poster))
    assert (root.get("width"), root.get("height")) == ("1080", "1920")
    texts = {node.get("id"): node for node in root.iter(f"{SVG}text")}
    assert set(texts) == {"title", "subtitle", "cta"}
    assert texts["title"].get("font-family") == "Noto Sans SC"
    assert texts["title"].get("font-weight") == "800"
    spoken = {key: "".join(node.itertext()) for key, node in texts.items()}
    assert normalised(spoken["title"]) == normalised(copy.title)
    assert normalised(spoken["subtitle"]) == normalised(copy.subtitle)
    assert root.find(f"{SVG}image").get("href").startswith("data:image/png;base64,")


def read_back(ocr, poster) -> str:
    """What the OCR reads in the title and subtitle's area, in reading order, the area scaled so
    the title's lines are about 48 px high (where the recogniser reads best)."""
    boxes = [e.box for e in poster.elements if e.kind in ("title", "subtitle")]
    title = next(e for e in poster.elements if e.kind == "title")
    pad = title.size // 2
    x0, y0 = min(b[0] for b in boxes) - pad, min(b[1] for b in boxes) - pad
    x1, y1 = max(b[2] for b in boxes) + pad, max(b[3] for b in boxes) + pad
    crop = poster.image.crop((max(0, x0), max(0, y0), x1, y1))
    scale = 48 / title.size
    crop = crop.resize((round(crop.width * scale), round(crop.height * scale)))
    found, _ = ocr(np.asarray(crop))
    line_height = 48 * 0.9

    def reading_order(result):
        corners = result[0]
        middle = (corners[0][1] + corners[2][1]) / 2
        return round(middle / line_height), corners[0][0]

    return "".join(result[1] for result in sorted(found or [], key=reading_order))


@pytest.mark.slow
def test_twenty_titles_and_subtitles_read_back_exactly_by_offline_ocr(ocr):
    subtitle = "限时活动 12月25日"
    misread = []
    for i, title in enumerate(TITLES):
        picture = mascot_picture(background=["sky", "busy", "white", "black"][i % 4], seed=i)
        poster = compose_poster(picture, Copy(title, subtitle), 1080, 1920)
        read = read_back(ocr, poster)
        if normalised(read) != normalised(title + subtitle):
            misread.append((title, read))
    assert not misread, misread
