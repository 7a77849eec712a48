"""Finished posters: the title stays off the subject, reads at 4.5:1, fits exactly, never tofu."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from poster import contrast, fonts
from poster.compose import Brand, Copy, compose_poster, fit_picture
from poster.layout import overlap
from poster.text import LINE_SPACING
from tests.poster.conftest import mascot_picture

COPY = Copy("圣诞快乐", "达达送福到家 12月25日", "立即下单")
# The channel table ops staff name (px; print sizes at their dpi).
CHANNEL_SIZES = [
    (1080, 1920),  # 朋友圈海报 / 抖音 / 视频号 / story
    (1242, 1660),  # 小红书
    (1080, 1080),  # 朋友圈单图
    (900, 383),  # 公众号头图
    (500, 500),  # 公众号次图
    (1920, 1080),  # 微博
    (1920, 640),  # banner 3:1
    (3150, 7874),  # 易拉宝 80x200 cm at 100 dpi
    (2480, 3508),  # A4 at 300 dpi
]


def text_boxes(poster) -> list[tuple[int, int, int, int]]:
    return [e.box for e in poster.elements if e.lines]


def fraction(box, size):
    return (box[0] / size[0], box[1] / size[1], box[2] / size[0], box[3] / size[1])


def glyph_mask(element, size) -> np.ndarray:
    """The element's glyphs, drawn again from its description alone."""
    font = fonts.Face(element.family, fonts.family_path(element.family), element.weight)
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, _ = element.box
    for i, line in enumerate(element.lines):
        y = y0 + i * round(element.size * LINE_SPACING)
        if element.align == "center":
            draw.text(((x0 + x1) / 2, y), line, font=font.at(element.size), anchor="mt", fill=255)
        else:
            draw.text((x0, y), line, font=font.at(element.size), anchor="lt", fill=255)
    return np.asarray(mask) > 127


def behind_glyphs(poster) -> np.ndarray:
    """The picture with the poster's bands composited: what the texts are drawn on."""
    pixels = np.asarray(poster.picture, np.float64).copy()
    for band in (e for e in poster.elements if e.kind == "band"):
        x0, y0, x1, y1 = band.box
        colour = np.array([int(band.colour[i : i + 2], 16) for i in (1, 3, 5)], np.float64)
        pixels[y0:y1, x0:x1] = pixels[y0:y1, x0:x1] * (1 - band.opacity) + colour * band.opacity
    return pixels.round()


@pytest.mark.parametrize(
    ("subject", "title_above"),
    [((0.3, 0.45, 0.7, 0.95), True), ((0.3, 0.05, 0.7, 0.55), False)],
)
def test_the_title_never_covers_the_subject_and_follows_it(subject, title_above):
    picture = mascot_picture(subject=subject)
    poster = compose_poster(picture, COPY, 1080, 1920)
    title = next(e for e in poster.elements if e.kind == "title")
    # The picture is 2:3 and the poster 9:16: the crop moves the subject; compare in poster space.
    _, moved = fit_picture(picture, 1080, 1920, subject)
    assert overlap(fraction(title.box, (1080, 1920)), moved) == 0
    title_middle = (title.box[1] + title.box[3]) / 2 / 1920
    subject_middle = (moved[1] + moved[3]) / 2
    assert (title_middle < subject_middle) == title_above


def test_a_landscape_poster_puts_the_title_beside_the_subject():
    picture = mascot_picture(size=(768, 512), subject=(0.55, 0.15, 0.9, 0.95))
    poster = compose_poster(picture, COPY, 1920, 1080)
    assert poster.layout == "side"
    title = next(e for e in poster.elements if e.kind == "title")
    assert title.box[2] / 1920 < 0.55


@pytest.mark.parametrize("background", ["white", "black", "busy", "grey"])
def test_every_text_reaches_wcag_contrast_on_the_pixels_behind_it(background):
    picture = mascot_picture(background=background, seed=3)
    poster = compose_poster(picture, COPY, 1080, 1920, brand=Brand(footer="达达快送 使命必达"))
    behind = behind_glyphs(poster)
    texts = [e for e in poster.elements if e.lines]
    assert {e.kind for e in texts} == {"title", "subtitle", "cta", "footer"}
    for element in texts:
        mask = glyph_mask(element, poster.image.size)
        colour = tuple(int(element.colour[i : i + 2], 16) for i in (1, 3, 5))
        measured = contrast.covered_contrast(colour, behind[mask])
        assert measured >= contrast.WCAG_TEXT, (background, element.kind, measured)
        ys, xs = np.nonzero(mask)  # every glyph pixel is on the poster, inside its margin
        assert xs.min() > 0 and ys.min() > 0 and xs.max() < 1079 and ys.max() < 1919


@pytest.mark.parametrize(("width", "height"), CHANNEL_SIZES)
def test_every_channel_size_comes_out_exactly(width, height):
    poster = compose_poster(mascot_picture(), Copy("新店开业"), width, height)
    assert poster.image.size == (width, height)
    for box in text_boxes(poster):
        assert 0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height


@pytest.mark.parametrize(("width", "height"), [(1920, 640), (900, 383), (1080, 1080)])
def test_the_crop_keeps_the_subject_inside(width, height):
    subject = (0.05, 0.55, 0.45, 0.75)  # low and to the left, where a centred crop would cut it
    picture = mascot_picture(subject=subject)
    fitted, moved = fit_picture(picture, width, height, subject)
    assert fitted.size == (width, height)
    assert 0 <= moved[0] < moved[2] <= 1 and 0 <= moved[1] < moved[3] <= 1
    # the moved box still frames the subject: the figure's orange is inside it
    pixels = np.asarray(fitted)
    x0, y0, x1, y1 = (
        round(moved[0] * width),
        round(moved[1] * height),
        round(moved[2] * width),
        round(moved[3] * height),
    )
    orange = np.abs(pixels.astype(int) - (230, 90, 40)).sum(axis=2) < 30
    assert orange[y0:y1, x0:x1].sum() > 0.9 * orange.sum()


def test_a_missing_glyph_falls_back_or_is_refused_never_tofu():
    sc, tc = fonts.BUNDLED["Noto Sans SC"], fonts.BUNDLED["Noto Sans TC"]
    # an Extension B character (a rare name, say) that SC lacks and TC, the first fallback, has
    rare = next(
        chr(code)
        for code in range(0x20000, 0x2A6E0)
        if fonts.missing(chr(code), sc) and not fonts.missing(chr(code), tc)
    )
    poster = compose_poster(mascot_picture(), Copy(f"大{rare}吉"), 1080, 1920)
    title = next(e for e in poster.elements if e.kind == "title")
    assert title.family == "Noto Sans TC" and "".join(title.lines) == f"大{rare}吉"
    with pytest.raises(fonts.MissingGlyphs, match="🎄"):
        compose_poster(mascot_picture(), Copy("圣诞快乐🎄"), 1080, 1920)


def test_bad_copy_and_sizes_are_refused_naming_the_field():
    with pytest.raises(ValueError, match="title: 41 characters"):
        compose_poster(mascot_picture(), Copy("长" * 41), 1080, 1920)
    with pytest.raises(ValueError, match="size: 20000x100"):
        compose_poster(mascot_picture(), COPY, 20000, 100)
    with pytest.raises(ValueError, match="layout: side needs a landscape poster"):
        compose_poster(mascot_picture(), COPY, 1080, 1920, layout_name="side")


def test_the_logo_sits_in_a_free_corner_clear_of_the_texts(tmp_path):
    logo = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    ImageDraw.Draw(logo).rectangle((10, 10, 190, 90), fill=(200, 20, 20, 255))
    logo.save(tmp_path / "logo.png")
    poster = compose_poster(
        mascot_picture(), COPY, 1080, 1920, brand=Brand(logo=tmp_path / "logo.png")
    )
    placed = next(e for e in poster.elements if e.kind == "logo")
    assert placed.box[2] - placed.box[0] == round(0.18 * 1080)
    for box in text_boxes(poster):
        assert overlap(fraction(placed.box, (1080, 1920)), fraction(box, (1080, 1920))) == 0


def test_a_brand_band_too_pale_for_any_text_gives_way_to_a_dark_one():
    brand = Brand(band_colour=(128, 128, 128), colours=((150, 150, 150),))
    poster = compose_poster(
        mascot_picture(background="busy"), COPY, 1080, 1920, brand=brand, layout_name="bottom"
    )
    band = next(e for e in poster.elements if e.kind == "band")
    assert band.colour == "#1a1a1a"
    assert all(e.contrast >= 4.5 for e in poster.elements if e.lines)
