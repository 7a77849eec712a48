"""Chinese line breaking (禁则), Latin words kept whole, and font sizes found by fitting."""

from __future__ import annotations

import re

import pytest

from poster import fonts
from poster.text import NO_LINE_END, NO_LINE_START, break_lines, fit_text

STRINGS = [
    "圣诞快乐，达达送福到家！",
    "双十一狂欢节：全场满299减50，限时三天。",
    "「达达骑士」陪你过大年",
    "新店开业（朝阳大悦城店）今日营业",
    "冬至快乐！记得吃饺子哦～",
    "会员日 Member Day 全场8.8折",
    "Summer Sale 夏日冰饮第二杯半价",
    "iPhone 16 Pro Max 抢先预约",
    "早上9:30准时开抢，先到先得！",
    "《安全骑行守则》第3条：雨天慢行。",
    "“准时达”是我们的承诺",
    "配送范围扩大到5公里……",
    "下单立减10%，仅限今天！！",
    "中秋节——月圆人团圆",
    "618年中大促，来京东，购物车清空计划启动",
    "春节不打烊：除夕到初七照常配送",
    "扫码关注，领取新人红包",
    "Happy New Year 2026 新年快乐",
    "点外卖，选达达；送得快，服务好。",
    "【限时】每天10:00-22:00 免配送费",
    "你好，世界。你好，达达。你好，春天。",
    "周年庆第1波：满100减30、满200减70",
    "招募骑手！月入过万（多劳多得）",
    "小心路滑，减速慢行，安全第一",
    "国庆七天乐——出游好帮手",
    "元宵节快乐：猜灯谜、吃汤圆、看花灯",
    "“双旦”献礼，惊喜不断",
    "Dada Express, faster than ever!",
    "2025-12-24 平安夜特别活动",
    "你的快递已送达，请注意查收。",
]
assert len(STRINGS) == 30
LATIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.,'’\-+%:/&]*[A-Za-z0-9%]|[A-Za-z0-9]")


def width_of(text: str) -> float:
    """A fixed-advance measure: CJK and full-width characters 1, the rest 0.55."""
    return sum(1.0 if ord(char) > 0x2E80 else 0.55 for char in text)


@pytest.mark.parametrize("text", STRINGS)
@pytest.mark.parametrize("width", [3, 4, 5, 6, 7, 9, 12])
def test_breaking_rules_hold(text, width):
    lines = break_lines(text, width_of, width)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing lost or added
    for i, line in enumerate(lines):
        if i > 0:
            assert line[0] not in NO_LINE_START, (lines, line)
        if i < len(lines) - 1:
            assert line[-1] not in NO_LINE_END, (lines, line)
    for word in LATIN.findall(text):
        assert any(word in line for line in lines), (word, lines)  # never split


def test_a_forced_break_and_phrases():
    assert break_lines("第一行\n第二行", width_of, 10) == ["第一行", "第二行"]
    assert break_lines("圣诞快乐，达达送福", width_of, 6, whole_phrases=True) == [
        "圣诞快乐，",
        "达达送福",
    ]


def test_the_font_size_is_the_largest_that_fits():
    face = fonts.choose_face("圣诞快乐，达达送福到家！", [], fonts.TITLE_WEIGHT)
    fitted = fit_text("圣诞快乐，达达送福到家！", face.at, 900, 400, max_lines=2, max_size=300)
    assert fitted.width <= 900 and fitted.height <= 400 and len(fitted.lines) == 2
    assert fitted.lines == ["圣诞快乐，", "达达送福到家！"]  # broken between phrases
    bigger = face.at(fitted.size + 8)
    assert max(bigger.getlength(line) for line in fitted.lines) > 900 or fitted.size + 8 > 300
    with pytest.raises(ValueError, match="does not fit"):
        fit_text("一二三四五六七八九十" * 4, face.at, 100, 30, max_lines=1, max_size=40)
