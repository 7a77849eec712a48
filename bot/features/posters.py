"""Poster requests: a chat request → candidates to choose from → HD, variations, reroll, edit,
the original file. Also how candidates and HD posters reach the chat."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from bot.core import Core, job_button
from bot.features import finishing, retouch
from bot.features.settings import user_settings
from bot.follower import Delivery
from bot.i18n import Html, t
from bot.picture_requests import picture_params
from bot.refusals import request_refusal
from bot.replies import Button, Incoming, Keyboard, Picture, Press, Reply, engine_user, rows
from bot.settings import UserSettings
from bot.status import StatusMessage
from bot.store import JobRecord
from engine.service.client import EngineError
from prompts.build import build_prompt
from prompts.picture import control_intent
from prompts.request import extend_request, extract_count, split_options
from prompts.spec import PosterPrompt, render_prompt
from prompts.syntax import LoraTag
from prompts.template import split_count

# The acknowledgement stays one short message (a 4000-character request of unknown words once
# made 17 messages of notes): lists show their first items and count the rest.
MAX_LISTED = 30  # tags, untranslated words ... (the LLM step writes at most 30 tags too)
MAX_ITEM_CHARS = 40  # one tag or word; a longer "word" is a paste, not a word
MAX_NOTES_SHOWN = 8


class OverLimit(ValueError):
    """A request past one of the bot's limits: the catalog key that says so, and its values."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(f"{key}: {values}")
        self.key, self.values = key, values


def wanted_count(request: str) -> bool:
    """Whether the request itself says how many images (来4张, --batch 2)."""
    text, options = split_options(request)
    asked = {"batch_size", "n_iter"} & options.settings.keys()
    return bool(asked) or extract_count(text)[0] is not None


# --- requests -----------------------------------------------------------------------------------


async def text(core: Core, message: Incoming) -> None:
    """Plain text addressed to the bot: the answer to a pending "edit" or "title" (bot.db keeps
    `action:job_id:index`), else a request."""
    pending = core.store.user(message.user.id)["edit"]
    if pending and await core.admitted(message):
        core.store.update_user(message.user.id, edit="")
        # A pending edit saved before titles could be asked for is `job_id:index`.
        action, job_id, index = ["edit", *pending.split(":")][-3:]
        record = core.store.job(job_id)
        if record is not None:
            await REPLIES[action](core, message, record, int(index))
            return
    await poster(core, message, message.text, picture=replied_picture(core, message))


def replied_picture(core: Core, message: Incoming) -> dict[str, Any] | None:
    """The picture a message replies to: one the user sent, or one of our results (drawn from
    as img2img); {"image": reference, "size": (w, h)}, or None."""
    if message.reply_to_message_id is None:
        return None
    chat_id = message.place.chat_id
    if sent := core.store.picture_in(chat_id, message.reply_to_message_id):
        return {"image": sent["input"], "size": (sent["width"], sent["height"])}
    shown = core.store.output_shown_in(chat_id, message.reply_to_message_id)
    record = core.store.job(shown[0]) if shown else None
    if record is None or shown[1] >= len(record.outputs):
        return None
    params = record.params
    size = (params["width"], params["height"])
    if params.get("enable_hr"):
        size = (round(size[0] * params["hr_scale"]), round(size[1] * params["hr_scale"]))
    return {"image": {"output": record.outputs[shown[1]]}, "size": size}


async def edit_reply(core: Core, message: Incoming, record: JobRecord, index: int) -> None:
    """The reply to "edit": the request with the changes, drawn on the candidate's seed."""
    request = extend_request(record.request, message.text)
    await poster(core, message, request, seed=record.seeds[index])


async def poster_command(core: Core, message: Incoming, args: list[str]) -> None:
    """/poster <request>: draw a poster (works in groups with privacy mode on)."""
    await poster(core, message, message.text)


async def poster(
    core: Core,
    message: Incoming,
    request: str,
    seed: int | None = None,
    picture: dict[str, Any] | None = None,
) -> None:
    """A poster request: build the prompt, submit the candidates, acknowledge. With a
    `picture` ({"image", "size"}), the candidates are drawn from it (bot/pictures.py)."""
    if not await core.admitted(message):
        return
    language = core.language(message.user)
    if not request.strip():
        await core.say(message.place, language, "poster_usage")
        return
    settings = user_settings(core, message.user.id)
    if seed is not None:
        settings = UserSettings.from_dict(settings.to_dict() | {"seed": seed})
    try:
        intent, drawn = control_intent(request) if picture else (None, request)
        prompt = await build_prompt(
            drawn, core.config, template=settings.to_template(core.config), session=core.http
        )
        prompt, lora_note = await without_untrained_lora(core, message, language, prompt)
        params = candidate_params(core, prompt, settings, wanted_count(request))
        notes = [lora_note] if lora_note else []
        if picture is not None:
            params, note = await picture_params(core, language, drawn, intent, params, picture)
            notes.append(note)
            check_bot_limits(core, params)
    except OverLimit as exc:
        await core.say(message.place, language, exc.key, **exc.values)
        return
    except ValueError as exc:
        reason = request_refusal(language, exc)
        await core.say(message.place, language, "bad_request", reason=reason)
        return
    summary = describe(language, prompt, params, notes)
    await submit(core, message, language, "candidates", request, params, summary)


async def without_untrained_lora(
    core: Core, message: Incoming, language: str, prompt: PosterPrompt
) -> tuple[PosterPrompt, str]:
    """An IP whose LoRA file is not installed yet (a first run, before any training) draws
    without it: the prompt without the tag, and the note saying so (how to train or register
    it, once per chat; after that a short reminder). A LoRA typed in a WebUI prompt stays: the
    engine refuses it by name, as asked."""
    ip = core.config.find_ip(prompt.ip) if prompt.ip else None
    typed = any(note.code == "raw_prompt" for note in prompt.notes)
    if prompt.lora is None or ip is None or typed or prompt.lora.name != ip.lora:
        return prompt, ""
    try:
        installed = {lora["name"] for lora in await core.engine.loras()}
    except EngineError:
        return prompt, ""  # the submit that follows says what is wrong with the engine
    if ip.lora in installed:
        return prompt, ""
    text = render_prompt(prompt.trigger, prompt.natural_language, prompt.tags, None)
    drawn = dataclasses.replace(prompt, lora=None, extra_loras=[], prompt=text)
    values = {"ip": ip.name, "lora": ip.lora}
    if not core.store.first_notice(message.place.chat_id, f"lora_not_trained:{ip.name}"):
        return drawn, t(language, "lora_not_trained_again", **values)
    admin = core.is_admin(message.user.id)
    return drawn, t(language, "lora_not_trained_admin" if admin else "lora_not_trained", **values)


def candidate_params(
    core: Core, prompt: PosterPrompt, settings: UserSettings, count_in_request: bool
) -> dict[str, Any]:
    """txt2img params from a prompt plus what only the bot's settings decide."""
    params = prompt.to_txt2img()
    if not count_in_request:
        count = settings.count or core.config.bot.default_count
        params["batch_size"], params["n_iter"] = split_count(
            count, core.config.limits.max_batch_size
        )
    if prompt.lora and settings.lora_weight is not None and prompt.natural_language:
        lora = LoraTag(prompt.lora.name, settings.lora_weight)
        params["prompt"] = render_prompt(
            prompt.trigger, prompt.natural_language, prompt.tags, lora, prompt.extra_loras
        )
    if option := finishing.poster_option(prompt, params):
        params["poster"] = option
    check_bot_limits(core, params)
    return params


def check_bot_limits(core: Core, params: dict[str, Any]) -> None:
    limits = core.config.bot
    count = params["batch_size"] * params["n_iter"]
    if count > limits.max_count:
        raise OverLimit("limit_count", count=count, limit=limits.max_count)
    if params["steps"] > limits.max_steps:
        raise OverLimit("limit_steps", steps=params["steps"], limit=limits.max_steps)
    if max(params["width"], params["height"]) > limits.max_side:
        size = f"{params['width']}×{params['height']}"
        raise OverLimit("limit_size", size=size, limit=limits.max_side)


async def submit(
    core: Core,
    event: Incoming | Press,
    language: str,
    kind: str,
    request: str,
    params: dict[str, Any],
    summary: str,
    picked: int = 0,
) -> None:
    """Send one job to the engine and acknowledge it; refusals become friendly messages."""
    user, place = event.user, event.place
    if limited := core.over_limit(user.id):
        await core.say(place, language, limited[0], **limited[1])
        return
    call = core.engine.submit(
        params,
        user=engine_user(user.id),
        priority="admin" if core.is_admin(user.id) else "user",
        idempotency_key=core.job_key(event),
        kind="img2img" if params.get("init_images") else "txt2img",
    )
    if (job := await core.ask(event, language, call)) is None:
        return
    if core.store.job(job["id"]) is not None:
        return  # this message was handled before a restart; its job is followed already
    record = JobRecord(job["id"], user.id, place, kind, request, params, language, summary)
    record.picked = picked
    await core.follower.start(record, job.get("position"))


def parameters_line(language: str, params: dict[str, Any]) -> str:
    """Size, sampler, steps, CFG, count and seed on one line."""
    seed = params.get("seed", -1)
    return t(
        language,
        "parameters",
        size=f"{params['width']}×{params['height']}",
        sampler=params["sampler_name"],
        steps=params["steps"],
        cfg=f"{params['cfg_scale']:g}",
        count=params["batch_size"] * params["n_iter"],
        seed=seed if seed != -1 else t(language, "seed_random"),
    )


def describe(
    language: str, prompt: PosterPrompt, params: dict[str, Any], bot_notes: list[str] = ()
) -> str:
    """The acknowledgement: the structured prompt as designers write it, what was guessed, and
    the bot's own notes (already in `language`); one short message however long the request."""
    text = t(
        language,
        "ack",
        ip=prompt.ip or "-",
        trigger=prompt.trigger or "-",
        sentence=prompt.natural_language or "-",
        tags=listed(language, ", ".join(prompt.tags)) or "-",
    )
    text += "\n" + parameters_line(language, params)
    notes = [
        t(language, f"note_{note.code}", **{k: listed(language, v) for k, v in note.values.items()})
        for note in prompt.notes
    ]
    if notes := [*notes, *bot_notes]:
        if len(notes) > MAX_NOTES_SHOWN:
            more = t(language, "notes_more", count=len(notes) - MAX_NOTES_SHOWN)
            notes = [*notes[:MAX_NOTES_SHOWN], more]
        text += "\n" + t(language, "notes", notes=Html("; ".join(notes)))
    return text


def listed(language: str, value: Any) -> Any:
    """A note's or the tags' comma-separated list as the chat shows it: the first MAX_LISTED
    items and "…等 N 个", each item at most MAX_ITEM_CHARS characters."""
    if not isinstance(value, str):
        return value
    items = [
        item if len(item) <= MAX_ITEM_CHARS else item[: MAX_ITEM_CHARS - 1] + "…"
        for item in value.split(", ")
    ]
    if len(items) <= MAX_LISTED:
        return ", ".join(items)
    return ", ".join(items[:MAX_LISTED]) + t(language, "list_more", count=len(items) - MAX_LISTED)


async def rerun(
    core: Core, press: Press, parent: JobRecord, summary_key: str, **changes: Any
) -> None:
    """A new candidate set from an earlier job's params (reroll, variations, history)."""
    language = core.language(press.user)
    params = parent.params | changes
    summary = t(language, summary_key, request=parent.request, **changes)
    summary += "\n" + parameters_line(language, params)
    await submit(core, press, language, "candidates", parent.request, params, summary)


# --- buttons under the candidates ---------------------------------------------------------------


def choose_keyboard(language: str, job_id: str, count: int, from_picture: bool = False) -> Keyboard:
    """Under the candidates: pick one, or draw a new set; drawn from a picture, a set closer
    to it or freer from it (bot/features/pictures.py)."""
    numbers = [Button(str(i + 1), f"pick:{job_id}:{i}") for i in range(count)]
    keyboard = [*rows(numbers), [Button(t(language, "button_reroll"), f"reroll:{job_id}")]]
    if from_picture:
        keyboard.append(
            [
                Button(t(language, "button_closer"), f"closer:{job_id}"),
                Button(t(language, "button_freer"), f"freer:{job_id}"),
            ]
        )
    return keyboard


def drawn_from_picture(record: JobRecord) -> bool:
    return bool(record.params.get("init_images"))


def chosen_keyboard(language: str, job_id: str, index: int, finished: bool) -> Keyboard:
    """For the chosen candidate: what designers do next; a finished poster's file is its PNG
    among the finishing buttons."""

    def button(action: str) -> Button:
        return Button(t(language, f"button_{action}"), f"{action}:{job_id}:{index}")

    return [
        [button("hd"), button("var")],
        [button("edit")] if finished else [button("edit"), button("file")],
        *finishing.keyboard(language, job_id, index, finished),
        [button("back")],
    ]


async def pick(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """Pick a candidate: show what can be done with it (or go HD straight away)."""
    if user_settings(core, press.user.id).hd:
        return await hd(core, press, record, index)
    language = core.language(press.user)
    finished = bool(core.store.posters(record.job_id, index)[1])
    buttons = chosen_keyboard(language, record.job_id, index, finished)
    buttons[-1:-1] = await retouch.keyboard(core, language, record.job_id, index)  # 放大 修脸
    reply = Reply(t(language, "chosen", number=index + 1, seed=record.seeds[index]), buttons)
    await core.outbox.edit(press.place, press.message_id, reply)
    return None


async def back(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """Back to choosing among the candidates."""
    language = core.language(press.user)
    count = len(record.seeds)
    keyboard = choose_keyboard(language, record.job_id, count, drawn_from_picture(record))
    reply = Reply(t(language, "choose", count=count), keyboard)
    await core.outbox.edit(press.place, press.message_id, reply)
    return None


async def hd(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """Hires fix on the chosen candidate's locked seed."""
    language = core.language(press.user)
    # Jobs stored before every setting travelled with them get the defaults' hires settings.
    params = core.config.generation.settings() | record.params | locked_seed(record, index)
    params |= {"batch_size": 1, "n_iter": 1, "enable_hr": True}
    params |= finishing.poster_option_of(core, record, index)  # as re-laid out since
    summary = t(language, "hd_summary", number=index + 1, seed=record.seeds[index])
    summary += "\n" + parameters_line(language, params)
    await submit(core, press, language, "final", record.request, params, summary, picked=index)
    return t(language, "started")


async def variations(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """Variations: the chosen seed with new variation seeds."""
    strength = core.config.bot.variation_strength
    changes = {"seed": record.seeds[index], "subseed": -1, "subseed_strength": strength}
    await rerun(core, press, record, "variations_summary", **changes)
    return t(core.language(press.user), "started")


async def reroll(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """A new set of candidates with new seeds."""
    await rerun(core, press, record, "reroll_summary", seed=-1, subseed=-1, subseed_strength=0)
    return t(core.language(press.user), "started")


async def edit(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """Ask for the changes; the user's next message (a reply) is taken as them."""
    language = core.language(press.user)
    core.store.update_user(press.user.id, edit=f"edit:{record.job_id}:{index}")
    text = t(language, "edit_ask", request=record.request, seed=record.seeds[index])
    await core.outbox.send(press.place, Reply(text, ask_reply=True))
    return None


async def original_file(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """The chosen candidate as a PNG file, infotext intact."""
    picture = Picture(
        png=await core.engine.output(record.outputs[index]),
        caption=caption(record, index),
        filename=f"poster-{record.seeds[index]}.png",
    )
    message_id = await core.outbox.send_document(press.place, picture)
    core.store.remember_message(press.place.chat_id, message_id, record.job_id, index)
    return None


def locked_seed(record: JobRecord, index: int) -> dict[str, Any]:
    """The seed fields that reproduce candidate `index` exactly (variations included)."""
    seed = {"seed": record.seeds[index]}
    if record.params.get("subseed_strength"):
        seed["subseed"] = record.subseeds[index]
    return seed


# --- delivery -----------------------------------------------------------------------------------


def caption(record: JobRecord, index: int) -> str:
    params = record.params
    values = {"number": index + 1, "seed": record.seeds[index]}
    if record.kind == "final":  # one picture: the candidate it renders gives its number
        width, height = params["width"], params["height"]
        scale = params["hr_scale"]
        size = f"{round(width * scale)}×{round(height * scale)}"
        values |= {"number": record.picked + 1, "size": size}
        return t(record.language, "caption_final", **values)
    if params.get("subseed_strength"):
        values |= {"subseed": record.subseeds[index]}
        return t(record.language, "caption_variation", **values)
    return t(record.language, "caption_candidate", **values)


async def results(
    core: Core, record: JobRecord, job: dict[str, Any], status: StatusMessage
) -> list[Picture]:
    """The finished job's pictures (its seeds kept in bot.db); the status says done."""
    record.seeds = list(job["info"].get("all_seeds") or [])
    record.subseeds = list(job["info"].get("all_subseeds") or [])
    record.outputs = list(job["outputs"])
    core.store.save_job(record)
    shown = finishing.keep_posters(core, record, job)
    pngs = await asyncio.gather(*(core.engine.output(path) for path in shown))  # fetched together
    return [
        Picture(
            png=png, caption=caption(record, index), filename=f"poster-{record.seeds[index]}.png"
        )
        for index, png in enumerate(pngs)
    ]


async def deliver_candidates(
    core: Core, record: JobRecord, job: dict[str, Any], status: StatusMessage
) -> None:
    """The candidates as one album, then the keyboard to choose one."""
    pictures, place, send = await results(core, record, job, status), record.place, core.outbox
    album = await core.follower.retrying(lambda: send.send_album(place, pictures))
    for index, message_id in enumerate(album):
        core.store.remember_message(place.chat_id, message_id, record.job_id, index)
    choose = Reply(
        t(record.language, "choose", count=len(pictures)),
        choose_keyboard(record.language, record.job_id, len(pictures), drawn_from_picture(record)),
    )
    await core.follower.retrying(lambda: send.send(place, choose))


async def deliver_final(
    core: Core, record: JobRecord, job: dict[str, Any], status: StatusMessage
) -> None:
    """The HD poster as a photo to look at and as the original PNG file; a finished one at each
    size asked for, with the finishing buttons."""
    (picture,), place, send = await results(core, record, job, status), record.place, core.outbox
    if posters := core.store.posters(record.job_id, 0)[1]:
        await finishing.send_posters(core, place, record.language, record, 0, posters, True)
        return
    buttons = await retouch.keyboard(core, record.language, record.job_id, 0)  # 放大 修脸
    shown = dataclasses.replace(picture, keyboard=buttons)
    photo = await core.follower.retrying(lambda: send.send_photo(place, shown))
    document = await core.follower.retrying(lambda: send.send_document(place, picture))
    for message_id in (photo, document):
        core.store.remember_message(place.chat_id, message_id, record.job_id, 0)


REPLIES = {"edit": edit_reply, "title": finishing.title_reply}  # what a pending reply answers
TEXT = text
COMMANDS = {"poster": poster_command}
BUTTONS = {
    "pick": job_button(pick),
    "back": job_button(back),
    "hd": job_button(hd),
    "var": job_button(variations),
    "reroll": job_button(reroll),
    "edit": job_button(edit),
    "file": job_button(original_file),
}
DELIVERIES = {
    "candidates": Delivery(deliver_candidates),
    "final": Delivery(deliver_final),
}
