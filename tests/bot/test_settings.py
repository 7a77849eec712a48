"""Per-user settings become the prompt builder's template layer."""

import pytest

from bot.settings import CHOICES, UserSettings
from posterbot.config import Config
from prompts.template import template_prompt


def test_every_offered_choice_applies_and_round_trips():
    settings = UserSettings()
    for name, values in CHOICES.items():
        for value in values:
            settings = settings.with_choice(name, value)
            assert UserSettings.from_dict(settings.to_dict()) == settings


def test_a_value_not_offered_is_refused():
    with pytest.raises(ValueError, match="steps"):
        UserSettings().with_choice("steps", "9999")


def test_settings_reach_the_prompt():
    settings = UserSettings(
        sampler_name="Euler a", steps=20, size="landscape", style="水彩", seed=42
    )
    prompt = template_prompt(
        "达达骑士在雪地里送快递", Config(), template=settings.to_template(Config())
    )
    assert (prompt.sampler_name, prompt.steps, prompt.seed) == ("Euler a", 20, 42)
    assert prompt.width > prompt.height
    assert "watercolor" in prompt.tags


def test_the_request_still_wins_over_settings():
    settings = UserSettings(size="landscape", steps=20)
    prompt = template_prompt(
        "雪地海报，竖版 --steps 30", Config(), template=settings.to_template(Config())
    )
    assert prompt.height > prompt.width
    assert prompt.steps == 30
