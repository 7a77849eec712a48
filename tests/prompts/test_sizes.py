"""Generation sizes are multiples of 64 near the model's area; posters keep their shape."""

from __future__ import annotations

import pytest

from posterbot.errors import Refusal
from prompts.sizes import (
    channel_names,
    channel_target,
    generation_size,
    orientation_of,
    orientation_size,
    round_to_multiple,
)
from prompts.spec import Target

# Every channel and alias ops staff name, and the exact size its poster must have
# (/work/shared/reference.md, "Posters"; print sizes: cm / 2.54 x dpi).
CHANNELS = [
    ("朋友圈", "朋友圈", 1080, 1920, None),
    ("朋友圈海报", "朋友圈", 1080, 1920, None),
    ("海报", "朋友圈", 1080, 1920, None),
    ("朋友圈单图", "朋友圈单图", 1080, 1080, None),
    ("小红书", "小红书", 1242, 1660, None),
    ("小红书封面", "小红书", 1242, 1660, None),
    ("红书", "小红书", 1242, 1660, None),
    ("xiaohongshu", "小红书", 1242, 1660, None),
    ("抖音", "抖音", 1080, 1920, None),
    ("视频号", "抖音", 1080, 1920, None),
    ("快手", "抖音", 1080, 1920, None),
    ("story", "抖音", 1080, 1920, None),
    ("Douyin", "抖音", 1080, 1920, None),
    ("公众号头图", "公众号头图", 900, 383, None),
    ("公众号封面", "公众号头图", 900, 383, None),
    ("头图", "公众号头图", 900, 383, None),
    ("公众号次图", "公众号次图", 500, 500, None),
    ("次图", "公众号次图", 500, 500, None),
    ("微博", "微博", 1920, 1080, None),
    ("weibo", "微博", 1920, 1080, None),
    ("banner", "banner", 1920, 640, None),
    ("横幅", "banner", 1920, 640, None),
    ("网页横幅", "banner", 1920, 640, None),
    ("易拉宝", "易拉宝", 3150, 7874, 100),
    ("电梯广告", "电梯广告", 3543, 5315, 150),
    ("A4", "A4", 2480, 3508, 300),
    ("a3", "A3", 3508, 4961, 300),
    ("手机壁纸", "手机壁纸", 1080, 1920, None),
    ("电脑壁纸", "电脑壁纸", 1920, 1080, None),
    ("开屏", "开屏", 1080, 1920, None),
    ("Instagram", "instagram", 1080, 1080, None),
]


@pytest.mark.parametrize(("text", "name", "width", "height", "dpi"), CHANNELS)
def test_every_channel_resolves_to_its_exact_size(text, name, width, height, dpi):
    assert channel_target(text) == Target(name, width, height, dpi)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1080x1920", Target("1080x1920", 1080, 1920)),
        (" 900×383 ", Target("900x383", 900, 383)),
        ("2480x3508@300", Target("2480x3508@300", 2480, 3508, 300)),
        ("3:4", Target("3:4", 1080, 1440)),
        ("16:9", Target("16:9", 1920, 1080)),
        ("9：16", Target("9:16", 1080, 1920)),
        ("1:1", Target("1:1", 1080, 1080)),
    ],
)
def test_typed_sizes_and_ratios_resolve(text, expected):
    assert channel_target(text) == expected


@pytest.mark.parametrize("text", ["报纸", "", "0x100", "1080x", "0:4", "big banner"])
def test_unknown_sizes_are_refused_with_a_code(text):
    with pytest.raises(Refusal, match="size: ") as refused:
        channel_target(text)
    assert (refused.value.code, refused.value.values) == ("size_unknown", {"size": text})


def test_channel_names_list_each_channel_once_without_aliases():
    names = channel_names()
    assert {"朋友圈", "小红书", "抖音", "公众号头图", "banner", "易拉宝", "A4"} <= set(names)
    assert not {"红书", "story", "横幅", "海报"} & set(names)
    assert len(names) == len(set(names))
    assert all(channel_target(name).name == name for name in names)


@pytest.mark.parametrize(
    ("size", "orientation"),
    [((1080, 1920), "portrait"), ((1920, 640), "landscape"), ((500, 500), "square")],
)
def test_orientation_of(size, orientation):
    assert orientation_of(*size) == orientation


def test_round_to_multiple():
    assert [round_to_multiple(v) for v in (10, 500, 543, 1080)] == [64, 512, 512, 1088]


@pytest.mark.parametrize(
    ("orientation", "base", "expected"),
    [
        ("portrait", (512, 768), (512, 768)),
        ("landscape", (512, 768), (768, 512)),
        ("square", (512, 768), (512, 512)),
        ("portrait", (1024, 1024), (1024, 1536)),
    ],
)
def test_orientation_keeps_the_short_side(orientation, base, expected):
    assert orientation_size(orientation, *base) == expected


def test_large_final_sizes_are_generated_near_the_default_area():
    width, height = generation_size(1080, 1920, 512 * 768)
    assert (width, height) == (448, 832)
    assert abs((width / height) / (1080 / 1920) - 1) < 0.05  # the shape, within 5%


def test_small_sizes_are_only_rounded():
    assert generation_size(500, 500, 512 * 768) == (512, 512)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: orientation_size("diagonal", 512, 512), "orientation: must be one of"),
        (lambda: generation_size(0, 512, 512 * 512), "size: 0x512 must be positive"),
    ],
)
def test_bad_input_names_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        # a physical size is a print at its dpi, never that many pixels
        ("达达过年海报，60x160cm", Target("60x160cm", 2362, 6299, 100)),
        ("达达过年海报，尺寸 60 x 90 厘米", Target("60x90厘米", 3543, 5315, 150)),
        ("达达宣传单 21x29.7cm", Target("21x29.7cm", 2480, 3508, 300)),
        ("达达台卡 100x150mm", Target("100x150mm", 1181, 1772, 300)),
        ("达达工地围挡 300x80公分", Target("300x80公分", 11811, 3150, 100)),
        # ratios written with 比
        ("达达过年，9比16", Target("9:16", 1080, 1920)),
        ("达达过年 比例 5比4", Target("5:4", 1350, 1080)),
    ],
)
def test_physical_sizes_and_ratios_in_words_become_their_targets(request_text, expected):
    from prompts.lexicon import load_glossary
    from prompts.request import extract_size

    targets, _, rest = extract_size(request_text, load_glossary())
    assert targets == [expected]
    assert "cm" not in rest and "比" not in rest.replace("比例", "")


def test_a_physical_size_is_generated_in_its_shape_near_the_default_area():
    from posterbot.config import Config
    from prompts.template import template_prompt

    prompt = template_prompt("达达过年海报，60x160cm", Config())
    assert (prompt.width, prompt.height) == (384, 1024)  # 3:8, like the print; not 64x128
    assert prompt.targets[0].dpi == 100
