"""A request drawn from a picture: its shape kept unless the request names one, strength steps."""

from __future__ import annotations

import pytest

from prompts.lexicon import load_glossary
from prompts.picture import (
    control_intent,
    control_model,
    fitted_size,
    from_picture,
    names_a_size,
    stepped_strength,
)


@pytest.mark.parametrize(
    ("picture", "area", "size"),
    [
        ((4032, 3024), 512 * 768, (704, 512)),  # a phone photo, landscape
        ((3024, 4032), 512 * 768, (512, 704)),
        ((1000, 1000), 512 * 512, (512, 512)),
        ((96, 64), 64 * 64, (128, 64)),  # rounding never squares a landscape picture
        ((64, 96), 64 * 64, (64, 128)),
    ],
)
def test_the_size_keeps_the_pictures_shape_at_about_the_area(picture, area, size):
    assert fitted_size(picture, area) == size
    assert all(side % 64 == 0 for side in fitted_size(picture, area))


@pytest.mark.parametrize(
    ("request_text", "named"),
    [
        ("达达骑士站在这里，圣诞海报", False),
        ("达达骑士，竖版", True),
        ("达达骑士 小红书封面", True),
        ("达达骑士 16:9", True),
        ("达达骑士 --width 768", True),
    ],
)
def test_a_request_that_names_a_size_keeps_it(request_text, named):
    assert names_a_size(request_text, load_glossary()) is named


def test_from_picture_adds_the_picture_in_its_shape():
    params = {"prompt": "x", "width": 512, "height": 768}
    drawn = from_picture(params, "input:" + "a" * 64, (1600, 900), 0.55, keep_shape=True)
    assert drawn["init_images"] == ["input:" + "a" * 64]
    assert drawn["denoising_strength"] == 0.55 and drawn["resize_mode"] == 1
    assert (drawn["width"], drawn["height"]) == (832, 448)
    kept = from_picture(params, {"output": "x.png"}, (1600, 900), 0.55, keep_shape=False)
    assert (kept["width"], kept["height"]) == (512, 768)


def test_strength_steps_stay_within_bounds():
    assert stepped_strength(0.55, -1) == 0.4
    assert stepped_strength(0.55, +1) == 0.7
    assert stepped_strength(0.15, -1) == 0.15
    assert stepped_strength(0.9, +1) == 0.95


@pytest.mark.parametrize(
    ("request_text", "intent", "rest"),
    [
        ("按这个草图，达达骑士在海边", "sketch", "达达骑士在海边"),
        ("达达骑士 参考构图 圣诞海报", "layout", "达达骑士 ， 圣诞海报"),
        ("照这个姿势画达达骑士", "pose", "画达达骑士"),
        ("达达骑士在海边", None, "达达骑士在海边"),
    ],
)
def test_the_intent_phrase_is_read_and_taken_out(request_text, intent, rest):
    assert control_intent(request_text) == (intent, rest)


def test_the_controlnet_model_is_the_configured_one_or_the_first_fitting_name():
    models = ["control_v11p_sd15_canny [abcd1234]", "control_v11p_sd15_scribble [ef567890]"]
    assert control_model("sketch", models) == models[1]
    assert control_model("layout", models) == models[0]
    assert control_model("pose", models) is None
    assert control_model("sketch", models, "control_v11p_sd15_canny") == models[0]
    assert control_model("sketch", models, "missing") is None
