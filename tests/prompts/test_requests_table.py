"""Realistic ops requests, combined from the parts ops staff write: a subject, a size, a count,
copy and a "don't". Each has its expected size, count, copy fields and required / forbidden
English words in the positive and the negative prompt; property tests hold over all of them
and over random combinations."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prompts.lexicon import load_glossary
from prompts.template import template_prompt
from tests.prompts.conftest import make_config
from tests.prompts.test_negation import _both, _parts

# (what is drawn, words the positive prompt must hold, words it must not)
SUBJECTS = [
    ("达达在雪地里送快递", ["delivering parcels", "snowy field"], []),
    ("达达喝奶茶", ["drinking milk tea"], []),
    ("达达拿着闹钟", ["holding alarm clock"], []),
    ("达达在商场门口剪彩", ["ribbon cutting ceremony", "shopping mall"], []),
    ("新店开业 达达挥手", ["grand opening", "waving"], []),
    ("会员日 达达拿着购物袋", ["members day", "holding shopping bags"], []),
    ("秒杀活动 达达奔跑", ["flash sale", "running"], []),
    ("元宵节达达吃汤圆", ["lantern festival", "eating tangyuan"], []),
    ("中秋节达达赏月", ["mid-autumn festival", "looking at the moon"], []),
    ("端午节达达划龙舟", ["dragon boat festival", "rowing a dragon boat"], []),
    ("春节舞狮 达达放鞭炮", ["lion dance", "fireworks"], []),
    ("达达骑电动车 戴头盔", ["riding an electric scooter", "wearing helmet"], []),
    ("雨天路滑 达达穿雨衣", ["rain", "wearing raincoat"], ["umbrella"]),
    ("招聘 达达在写字楼前", ["recruitment", "office building"], []),
    ("安全提示 达达戴安全帽", ["safety reminder", "wearing hard hat"], []),
    ("达达在海边吃西瓜", ["eating watermelon", "beach"], []),
    ("达达在厨房做饭", ["cooking", "kitchen"], []),
    ("达达在森林里跳舞 水彩风", ["dancing", "forest", "watercolor"], ["c4d"]),
    ("国潮风 达达举着灯笼", ["guochao", "raising red lanterns"], ["c4d"]),
    ("赛博朋克风 城市夜景 达达", ["cyberpunk", "cityscape"], []),
    ("达达在地铁站看手机", ["subway station", "holding a smartphone"], []),
    ("达达拿着灭火器", ["holding fire extinguisher"], []),
    ("圣诞节达达戴圣诞帽", ["christmas", "wearing santa hat"], []),
    ("万圣节达达和南瓜", ["halloween", "pumpkins"], []),
    ("情人节达达送玫瑰", ["valentine's day", "giving red roses"], []),
    ("儿童节达达拿着气球", ["children's day", "holding balloons"], []),
    ("毕业季达达在校园", ["graduation", "campus"], []),
    ("元霄节 达达挥手", ["lantern festival", "waving"], []),
    ("聖誕節 達達送快遞", ["christmas", "delivering parcels"], []),
    ("达达在长城上拍照", ["great wall of china", "taking a photo"], []),
    ("达达在太空里飞 3D风格", ["outer space", "flying", "3d render"], []),
    ("下雪天达达堆雪人", ["snowing", "building a snowman"], []),
    ("达达在夜市吃火锅", ["night market", "eating hot pot"], []),
    ("达达在办公室加班", ["office interior", "working"], []),
    ("达达抱着包裹 奔跑", ["holding a parcel", "running"], []),
    ("达达在医院门口鞠躬", ["hospital", "bowing"], []),
    ("pls give 达达 a christmas vibe", ["christmas"], ["pls", "vibe", "give"]),
    ("dada knight surfing in summer", ["surfing", "summer"], []),
    ("京东狗在公园遛狗", ["park", "walking a dog"], []),
    ("达达和京东狗一起过年", ["chinese new year"], []),
    ("达达点外卖 在家", ["holding a smartphone", "cozy home interior"], ["delivering"]),
    ("达达和长颈鹿在草地上", ["giraffe", "meadow"], []),
]
# (size words, generation width, height)
SIZES = [
    ("", 512, 768),
    ("竖版", 512, 768),
    ("横版", 768, 512),
    ("方图", 512, 512),
    ("小红书", 512, 704),
    ("抖音", 448, 832),
    ("公众号头图", 896, 384),
    ("微博", 832, 448),
    ("banner", 1088, 384),
    ("易拉宝", 384, 960),
    ("电梯广告", 512, 768),
    ("A3", 512, 768),
    ("横版16:9", 832, 448),
    ("3:4", 512, 704),
    ("9比16", 448, 832),
    ("60x160cm", 384, 1024),
    ("淘宝主图", 640, 640),
    ("B站封面", 768, 512),
    ("PPT", 832, 448),
    ("朋友圈", 448, 832),
]
COUNTS = [
    ("", 1),
    ("来4张", 4),
    ("两张", 2),
    ("一张就好", 1),
    ("来三张", 3),
    ("6张", 6),
    ("多来几张", 1),
]
# (copy words, title, subtitle, cta)
COPY = [
    ("", "", "", ""),
    ("标题「年终大促」", "年终大促", "", ""),
    ("标题是新品上市 副标题是限时八折", "新品上市", "限时八折", ""),
    ("按钮「立即抢购」", "", "", "立即抢购"),
    ("活动时间12月1日-12月12日", "", "", "12月1日-12月12日"),
    ("立即下单", "", "", "立即下单"),
    ("文案“欢迎回家”", "欢迎回家", "", ""),
]
# (what is said no to, its English in the negative prompt)
NEGATIONS = [
    ("", []),
    ("不要文字", ["text"]),
    ("不要人", ["people", "crowd"]),
    ("不要圣诞树", ["christmas tree"]),
    ("no balloons", ["balloons"]),
    ("别用暗色调", []),
]


def _request(i: int) -> tuple[str, dict]:
    """The i-th combination: every subject in turn, the other parts picked by a seeded random
    generator (the same table every run), in one of three orders."""
    pick = random.Random(i)
    subject = SUBJECTS[i % len(SUBJECTS)]
    size, count, copy, negation = (pick.choice(parts) for parts in (SIZES, COUNTS, COPY, NEGATIONS))
    parts = [subject[0], size[0], count[0], copy[0], negation[0]]
    order = [parts, [parts[1], *parts[:1], *parts[2:]], [parts[3], parts[0], *parts[1:3], parts[4]]]
    separator = "，" if i % 2 else " "
    text = separator.join(part for part in order[i % 3] if part)
    expected = {
        "width": size[1],
        "height": size[2],
        "count": count[1],
        "title": copy[1],
        "subtitle": copy[2],
        "cta": copy[3],
        "positive": subject[1] + (["copy space"] if copy[1] else []),
        "not_positive": subject[2] + negation[1],
        "negative": negation[1] + (["text"] if copy[1] else []),
    }
    return text, expected


TABLE = list({text: (text, expected) for text, expected in map(_request, range(270))}.values())


def test_the_table_is_large_and_varied():
    assert len(TABLE) >= 250
    assert len({text for text, _ in TABLE}) == len(TABLE)


def _check(prompt, expected: dict) -> None:
    assert (prompt.width, prompt.height) == (expected["width"], expected["height"])
    assert prompt.batch_size * prompt.n_iter == expected["count"]
    assert (prompt.title, prompt.subtitle, prompt.cta) == (
        expected["title"],
        expected["subtitle"],
        expected["cta"],
    )
    positive, negative = _parts(prompt.prompt), _parts(prompt.negative_prompt)
    for word in expected["positive"]:
        assert word in positive, (word, positive)
    for word in expected["not_positive"]:
        assert not any(re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", p) for p in positive)
    for word in expected["negative"]:
        assert word in negative, (word, negative)


@pytest.mark.parametrize(("request_text", "expected"), TABLE, ids=[t for t, _ in TABLE])
def test_ops_requests(config, request_text, expected):
    prompt = template_prompt(request_text, config)
    _check(prompt, expected)
    assert_properties(request_text, prompt)


# --- properties


def _known_words(config) -> set[str]:
    glossary = load_glossary()
    words = {*glossary.terms, *glossary.ignore, *glossary.negations, *glossary.replacements}
    words |= {*glossary.orientations, *glossary.channels, *glossary.hires_words}
    words |= {*glossary.solo_words}
    words |= {name for ip in config.ips for name in (ip.name, *ip.aliases)}
    return {word for word in words if re.search(r"[\u3400-\u9fff]", word)}


_CONFIG = make_config()
_KNOWN = sorted(_known_words(_CONFIG), key=len, reverse=True)
# counts (多来几张, 一张就好), ratios (9比16), print units and the copy's keywords and dates:
# read by prompts.request before any word is looked up
_COUNT_WORDS = set("一二两三四五六七八九十几多张幅款份个版本来出就好行够即可画比厘米公分毫")
_COUNT_WORDS |= set("标题副小按钮文字案活动时间日期月号行动召")


def assert_properties(request_text: str, prompt) -> None:
    """The positive prompt is ASCII; no word is both positive and negative; every Chinese
    character of the request is copy, a word the builder knows, or named in the notes."""
    raw = any(note.code in ("raw_prompt", "raw_options") for note in prompt.notes)
    if not raw:
        assert prompt.prompt.isascii(), prompt.prompt
    assert not _both(prompt), prompt
    covered = set(prompt.title + prompt.subtitle + prompt.cta)
    covered |= {char for note in prompt.notes for char in str(note.values)}
    lowered = request_text.lower()
    for word in _KNOWN:
        if word in lowered:
            covered |= set(word)
    left = [c for c in request_text if "\u3400" <= c <= "\u9fff" and c not in covered]
    assert not [c for c in left if c not in _COUNT_WORDS], (left, prompt.notes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=st.sampled_from(SUBJECTS),
    size=st.sampled_from(SIZES),
    count=st.sampled_from(COUNTS),
    copy=st.sampled_from(COPY),
    negation=st.sampled_from(NEGATIONS),
    separator=st.sampled_from(["，", " ", "。", "；"]),
    order=st.permutations(range(5)),
)
def test_any_combination_holds_the_properties(
    subject, size, count, copy, negation, separator, order
):
    parts = [subject[0], size[0], count[0], copy[0], negation[0]]
    text = separator.join(parts[i] for i in order if parts[i])
    prompt = template_prompt(text, _CONFIG)
    assert_properties(text, prompt)
    assert (prompt.width, prompt.height) == (size[1], size[2]), text
    assert (prompt.title, prompt.subtitle, prompt.cta) == copy[1:], text
