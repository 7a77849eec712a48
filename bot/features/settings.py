"""Per-user settings (/settings keyboard, /seed), parameter templates (/template) and /lang."""

from __future__ import annotations

import json

from bot.core import Core, MalformedPress
from bot.i18n import LANGUAGES, t
from bot.replies import Button, Incoming, Keyboard, Press, Reply, rows
from bot.settings import CHOICES, UserSettings

TEMPLATE_NAME_CHARS = 32  # keeps /template list readable and button data short


def user_settings(core: Core, user_id: int) -> UserSettings:
    return UserSettings.from_dict(json.loads(core.store.user(user_id)["settings"] or "{}"))


def save_settings(core: Core, user_id: int, settings: UserSettings) -> None:
    core.store.update_user(user_id, settings=json.dumps(settings.to_dict()))


# --- keyboards ----------------------------------------------------------------------------------


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


# --- commands and buttons -----------------------------------------------------------------------


async def show_settings(core: Core, message: Incoming, args: list[str]) -> None:
    """/settings: the settings keyboard."""
    if not await core.admitted(message):
        return
    language = core.language(message.user)
    keyboard = settings_keyboard(language, message.user.id, user_settings(core, message.user.id))
    await core.outbox.send(message.place, Reply(t(language, "settings_title"), keyboard))


async def change_setting(core: Core, press: Press, args: list[str]) -> str | None:
    """/settings keyboard (`set:owner[:name[:index]]`): open a setting, apply a choice, go
    back, or close."""
    language = core.language(press.user)
    owner, name, index = [*args, "", "", ""][:3]
    if owner != str(press.user.id):
        return t(language, "not_your_settings")
    if len(args) > 3 or name not in ("", "close", *CHOICES) or not choice_index(name, index):
        raise MalformedPress(f"no such setting or choice: {args}")
    settings = user_settings(core, press.user.id)
    if name == "close":
        reply = Reply(t(language, "settings_saved"))
    elif name and not index:
        keyboard = choices_keyboard(language, press.user.id, name)
        reply = Reply(t(language, "settings_pick", setting=t(language, f"name_{name}")), keyboard)
    else:
        if name:
            settings = settings.with_choice(name, CHOICES[name][int(index)])
            save_settings(core, press.user.id, settings)
        keyboard = settings_keyboard(language, press.user.id, settings)
        reply = Reply(t(language, "settings_title"), keyboard)
    await core.outbox.edit(press.place, press.message_id, reply)
    return None


def choice_index(name: str, index: str) -> bool:
    """Whether `index` ("" or a number) picks one of setting `name`'s choices."""
    if not index:
        return True
    return name in CHOICES and index.isdigit() and int(index) < len(CHOICES[name])


async def template(core: Core, message: Incoming, args: list[str]) -> None:
    """/template save|use|list|delete NAME: the user's parameter templates."""
    if not await core.admitted(message):
        return
    language, user_id, place = core.language(message.user), message.user.id, message.place
    action, name = [*args, "", ""][:2]
    if action == "list" or not action:
        names = core.store.template_names(user_id)
        listing = "\n".join(names) if names else t(language, "templates_none")
        await core.say(place, language, "templates_list", names=listing)
    elif action not in ("save", "use", "delete") or not name:
        await core.say(place, language, "template_usage")
    elif len(name) > TEMPLATE_NAME_CHARS:
        await core.say(place, language, "template_name_long", limit=TEMPLATE_NAME_CHARS)
    elif action == "save":
        core.store.save_template(user_id, name, user_settings(core, user_id).to_dict())
        await core.say(place, language, "template_saved", name=name)
    elif action == "delete":
        found = core.store.delete_template(user_id, name)
        await core.say(
            place, language, "template_deleted" if found else "template_missing", name=name
        )
    elif (saved := core.store.template(user_id, name)) is None:
        await core.say(place, language, "template_missing", name=name)
    else:
        save_settings(core, user_id, UserSettings.from_dict(saved))
        await core.say(place, language, "template_used", name=name)


async def seed(core: Core, message: Incoming, args: list[str]) -> None:
    """/seed [N|off]: show, lock or unlock the seed of the next requests."""
    if not await core.admitted(message):
        return
    language, user_id = core.language(message.user), message.user.id
    settings = user_settings(core, user_id)
    if args and (args[0] == "off" or args[0].isdigit()):
        locked = int(args[0]) if args[0].isdigit() else None
        settings = UserSettings.from_dict(settings.to_dict() | {"seed": locked})
        save_settings(core, user_id, settings)
    elif args:
        await core.say(message.place, language, "seed_usage")
        return
    recent = [seed for record in core.store.recent_jobs(user_id, 3) for seed in record.seeds]
    locked = settings.seed if settings.seed is not None else t(language, "seed_random")
    await core.say(
        message.place,
        language,
        "seed_status",
        locked=locked,
        recent=", ".join(map(str, recent)) or "-",
    )


async def lang(core: Core, message: Incoming, args: list[str]) -> None:
    """/lang zh|en: the language the bot answers this user in."""
    if args and args[0] in LANGUAGES:
        core.store.update_user(message.user.id, language=args[0])
        await core.say(message.place, args[0], "lang_set")
    else:
        await core.say(message.place, core.language(message.user), "lang_usage")


COMMANDS = {"settings": show_settings, "template": template, "seed": seed, "lang": lang}
BUTTONS = {"set": change_setting}
