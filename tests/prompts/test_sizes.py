"""Generation sizes are multiples of 64 near the model's area; posters keep their shape."""

from __future__ import annotations

import pytest

from prompts.sizes import generation_size, orientation_size, round_to_multiple


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
