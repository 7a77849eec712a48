"""Inline keyboards. Button data is `action:args` (≤ 64 bytes): job ids, candidate numbers and
settings choices by index, never user text."""

from __future__ import annotations

from bot.i18n import t
from bot.replies import Button, Keyboard
from bot.settings import CHOICES, UserSettings

ROW_WIDTH = 5  # buttons per row; Telegram wraps awkwardly beyond this on phones


def rows(buttons: list[Button], width: int = ROW_WIDTH) -> Keyboard:
    return [buttons[i : i + width] for i in range(0, len(buttons), width)]


def choose_keyboard(language: str, job_id: str, count: int) -> Keyboard:
    """Under the candidates: pick one, or draw a new set."""
    numbers = [Button(str(i + 1), f"pick:{job_id}:{i}") for i in range(count)]
    return [*rows(numbers), [Button(t(language, "button_reroll"), f"reroll:{job_id}")]]


def chosen_keyboard(language: str, job_id: str, index: int) -> Keyboard:
    """For the chosen candidate: what designers do next."""

    def button(action: str) -> Button:
        return Button(t(language, f"button_{action}"), f"{action}:{job_id}:{index}")

    return [
        [button("hd"), button("var")],
        [button("edit"), button("file")],
        [Button(t(language, "button_back"), f"back:{job_id}:{index}")],
    ]


def history_keyboard(language: str, job_ids: list[str]) -> Keyboard:
    buttons = [
        Button(t(language, "button_rerun", number=i + 1), f"rerun:{job_id}")
        for i, job_id in enumerate(job_ids)
    ]
    return rows(buttons)


def settings_keyboard(language: str, owner: int, settings: UserSettings) -> Keyboard:
    """One button per setting, showing its current value."""
    buttons = [
        Button(
            t(language, f"setting_{name}", value=setting_value(language, settings, name)),
            f"set:{owner}:{name}",
        )
        for name in CHOICES
    ]
    return [*rows(buttons, 2), [Button(t(language, "button_close"), f"set:{owner}:close")]]


def choices_keyboard(language: str, owner: int, name: str) -> Keyboard:
    buttons = [
        Button(choice_label(language, name, value), f"set:{owner}:{name}:{index}")
        for index, value in enumerate(CHOICES[name])
    ]
    return [*rows(buttons, 3), [Button(t(language, "button_back"), f"set:{owner}")]]


def choice_label(language: str, name: str, value: str) -> str:
    if value == "":
        return t(language, "value_default")
    if name in ("size", "negative", "hd"):
        return t(language, f"value_{name}_{value}")
    return value


def setting_value(language: str, settings: UserSettings, name: str) -> str:
    if name == "hd":
        return choice_label(language, name, "on" if settings.hd else "off")
    value = getattr(settings, name)
    return choice_label(
        language,
        name,
        "" if value is None else f"{value:g}" if isinstance(value, float) else str(value),
    )
