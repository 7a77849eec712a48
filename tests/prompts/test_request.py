"""Extracting options, poster text, sizes, counts and seeds from a request."""

from __future__ import annotations

import pytest

from posterbot.errors import Refusal
from prompts.lexicon import load_glossary
from prompts.notes import Note
from prompts.request import (
    Options,
    chinese_number,
    count_range,
    extend_request,
    extract_count,
    extract_seed,
    extract_size,
    extract_titles,
    split_options,
)


def test_options_are_split_from_the_prompt():
    text, options = split_options(
        'dadaknight, snow --steps 30 --seed=123 --sampler "dpm++ 2m karras" --cfg 6 --hires'
    )
    assert text == "dadaknight, snow"
    assert options == Options(
        settings={
            "steps": 30,
            "seed": 123,
            "sampler_name": "DPM++ 2M Karras",
            "cfg_scale": 6.0,
            "enable_hr": True,
        }
    )


def test_size_option_and_negative_prompt():
    _, options = split_options("x --size 768x512 --neg 'text, watermark' --batch 2 --n-iter 3")
    assert options.settings == {
        "width": 768,
        "height": 512,
        "negative_prompt": "text, watermark",
        "batch_size": 2,
        "n_iter": 3,
    }


def test_every_generation_setting_is_an_option_under_its_webui_name():
    _, options = split_options("x --clip-skip 2 --hr_scale=1.5 --enable-hr --no-hires --ip joy")
    assert options.settings == {"clip_skip": 2, "hr_scale": 1.5, "enable_hr": False}
    assert options.ip == "joy"


def test_double_dash_inside_words_is_not_an_option():
    assert split_options("well-lit--scene")[1] == Options()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x --steps", "--steps: needs a value"),
        ("x --size big", "--size: must be WIDTHxHEIGHT"),
        ('x --sampler "Euler a', "options: No closing quotation"),
        ("x --steps 30 oops", "oops: unknown option"),
    ],
)
def test_bad_options_name_the_option(text, message):
    with pytest.raises(ValueError, match=message):
        split_options(text)


@pytest.mark.parametrize(
    ("text", "title", "subtitle"),
    [
        ("圣诞海报，标题「圣诞快乐」", "圣诞快乐", ""),
        ("标题是圣诞快乐，副标题：满199减100", "圣诞快乐", "满199减100"),
        ("副标题“限时包邮”，标题《双十一》", "双十一", "限时包邮"),
        ("文案：温暖每一次送达", "温暖每一次送达", ""),
        ("标题「A」文案「B」", "A", "B"),
        ('"Merry Christmas" and "Free delivery"', "Merry Christmas", "Free delivery"),
        ("【年货节】来啦", "年货节", ""),
        ("没有标题的请求", "", ""),
    ],
)
def test_titles_and_subtitles(text, title, subtitle):
    found_title, found_subtitle, _, rest, _ = extract_titles(text)
    assert (found_title, found_subtitle) == (title, subtitle)
    if title:
        assert title not in rest  # poster text is not drawn as picture words


def test_a_third_quote_is_noted_not_lost():
    *_, notes = extract_titles("「一」「二」「三」")
    assert notes == [Note("extra_poster_text", {"text": "「三」"})]


@pytest.mark.parametrize(
    ("text", "cta", "title"),
    [
        ("按钮「立即下单」", "立即下单", ""),
        ("按钮文字：马上抢", "马上抢", ""),
        ("日期：12月25日，标题「圣诞快乐」", "12月25日", "圣诞快乐"),
        ("活动时间 12月1日-12月3日", "12月1日-12月3日", ""),
        ("行动号召“扫码领券”", "扫码领券", ""),
        ("cta: Order now", "Order now", ""),
        ("「圣诞快乐」", "", "圣诞快乐"),
    ],
)
def test_call_to_action(text, cta, title):
    found_title, _, found_cta, rest, _ = extract_titles(text)
    assert (found_cta, found_title) == (cta, title)
    if cta:
        assert cta not in rest  # never drawn by the model


@pytest.mark.parametrize(
    ("text", "field", "count"),
    [
        ("标题「" + "长" * 41 + "」", "title", 41),
        ("副标题「" + "长" * 81 + "」", "subtitle", 81),
        ("按钮「" + "长" * 41 + "」", "cta", 41),
    ],
)
def test_too_long_copy_is_refused_with_a_code(text, field, count):
    with pytest.raises(Refusal) as refused:
        extract_titles(text)
    assert refused.value.code == "text_too_long"
    assert refused.value.values["field"] == field and refused.value.values["count"] == count


@pytest.mark.parametrize(
    ("text", "sizes", "orientation"),
    [
        ("竖版海报", [], "portrait"),
        ("横版", [], "landscape"),
        ("banner", [("banner", 1920, 640)], None),  # a channel now, not only "landscape"
        ("横版横幅", [("banner", 1920, 640)], "landscape"),
        ("头像", [], "square"),
        ("1080x1920 竖版", [("1080x1920", 1080, 1920)], "portrait"),
        ("1920 × 1080", [("1920x1080", 1920, 1080)], None),
        ("3508x4961@300dpi", [("3508x4961@300", 3508, 4961)], None),
        ("小红书配图", [("小红书", 1242, 1660)], None),
        ("小红书和抖音各一张", [("小红书", 1242, 1660), ("抖音", 1080, 1920)], None),
        ("xiaohongshu, douyin", [("小红书", 1242, 1660), ("抖音", 1080, 1920)], None),
        ("2x3", [], None),  # too short to be a size
        ("3:4", [("3:4", 1080, 1440)], None),
        ("比例：5:7", [("5:7", 1080, 1512)], None),  # any ratio after 比例
        ("9:30 出发", [], None),  # a time, not a ratio
        ("16:00", [], None),
        ("1:1", [], "square"),  # the orientation word
    ],
)
def test_sizes(text, sizes, orientation):
    targets, found_orientation, _ = extract_size(text, load_glossary())
    assert [(t.name, t.width, t.height) for t in targets] == sizes
    assert found_orientation == orientation


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("来4张", 4),
        ("两张", 2),
        ("生成十张", 10),
        ("二十张", 20),
        ("x4", 4),
        ("×3", 3),
        ("4 images", 4),
        ("three posters", 3),
        ("3个版本", 3),
        ("达达送快递", None),
    ],
)
def test_counts(text, count):
    assert extract_count(text)[0] == count


def test_chinese_numbers():
    assert [chinese_number(t) for t in ("7", "两", "十", "十二", "二十", "五十五", "four")] == [
        7,
        2,
        10,
        12,
        20,
        55,
        4,
    ]


@pytest.mark.parametrize("text", ["十十", "两十", "二十十", "十二十", "一十"])
def test_what_is_no_chinese_number_is_a_value_error(text):
    with pytest.raises(ValueError, match="not a number"):
        chinese_number(text)


@pytest.mark.parametrize(
    ("first", "last", "numbers"),
    [(None, "两三", (2, 3)), (None, "三五", (3, 5)), (None, "三两", (2, 3)), ("5", "3", (3, 5))],
)
def test_count_ranges_are_read_lowest_first(first, last, numbers):
    assert count_range(first, last) == numbers


def test_seed_written_in_words():
    assert extract_seed("锁定种子：987")[0] == 987
    assert extract_seed("seed 42, snow")[0] == 42


def test_an_edit_goes_into_the_words_before_the_options():
    assert extend_request("达达水彩 --steps 30", "换成国潮") == "达达水彩，换成国潮 --steps 30"
    assert extend_request("达达水彩", " 加一顶帽子 ") == "达达水彩，加一顶帽子"
    text, options = split_options(extend_request("达达 --steps 1", "换成国潮风格"))
    assert (text, options.settings) == ("达达，换成国潮风格", {"steps": 1})


# Copy written the way staff type it: no quotes, a space between the fields, the picture after.
# (text, title, subtitle, cta, words that must stay for the picture)
UNQUOTED_COPY = [
    ("标题是年终盛典 副标题是会员专享 达达挥手", "年终盛典", "会员专享", "", "达达挥手"),
    ("标题 夏日清凉 副标题 第二杯半价 海边", "夏日清凉", "第二杯半价", "", "海边"),
    ("标题：开工大吉 送快递", "开工大吉", "", "", "送快递"),
    ("副标题是满99包邮 标题是周年庆", "周年庆", "满99包邮", "", ""),
    (
        "title Summer Sale subtitle Free delivery, beach",
        "Summer Sale",
        "Free delivery",
        "",
        "beach",
    ),
    # date lines and calls to action, with or without a keyword
    ("活动时间11月11日-11月13日，双十一", "", "", "11月11日-11月13日", "双十一"),
    ("达达送快递，马上抢购", "", "", "马上抢购", "达达送快递"),
    ("立即报名 开学季", "", "", "立即报名", "开学季"),
    ("圣诞海报，12月24日-12月25日", "", "", "12月24日-12月25日", "圣诞海报"),
    ("标题是周年庆 扫码领取", "周年庆", "", "扫码领取", ""),
    ("shop now, summer", "", "", "shop now", "summer"),
]


@pytest.mark.parametrize(
    ("text", "title", "subtitle", "cta", "picture"),
    UNQUOTED_COPY,
    ids=[c[0] for c in UNQUOTED_COPY],
)
def test_unquoted_copy_fills_each_field(text, title, subtitle, cta, picture):
    found_title, found_subtitle, found_cta, rest, _ = extract_titles(text)
    assert (found_title, found_subtitle, found_cta) == (title, subtitle, cta)
    for copy in (title, subtitle, cta):
        if copy:
            assert copy not in rest  # never drawn by the model
    assert picture in rest


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("达达过年，一张就好", 1),
        ("达达过年 两张就行", 2),
        ("三张即可，达达在海边", 3),
        ("达达过年，多来几张", None),  # no number: the chat's default count
        ("多出几张吧，达达在雪地里", None),
        ("达达过年，几张", None),
        ("再画几张达达", None),
    ],
)
def test_enough_and_a_few_more_are_read_as_counts_and_leave_no_words_behind(text, count):
    found, rest, notes = extract_count(text, 8)
    assert found == count and notes == []
    for words in ("几张", "就好", "就行", "即可", "多来", "多出"):
        assert words not in rest
