"""Finished posters in the chat: the copy laid out on a picture at a channel's exact size, and
the buttons under it that lay the same picture out again — another layout, title or size — with
one `finish_poster` call on the stored picture: no new generation, a fraction of a second.

What a picture's posters are now (the spec that laid them out, and the engine's files) is kept in
bot.db per job and picture, so the next press continues from the last one.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from bot.core import Core, MalformedPress, job_button
from bot.i18n import t
from bot.replies import Button, Incoming, Keyboard, Picture, Place, Press, Reply, rows
from bot.store import JobRecord
from prompts.sizes import channel_names, channel_target
from prompts.spec import PosterPrompt

LAYOUT_CYCLE = ("top", "bottom", "side")  # what 换版式 steps through; "side" only in landscape
SHORT_SIDE = 1080  # a picture asked for no channel is finished at its own shape, phone width
SIZE_ROW = 3  # channel buttons per row under 换尺寸 (their names are long)


def picture_target(width: int, height: int) -> dict[str, Any]:
    """One finished size of the picture's own shape, `SHORT_SIDE` pixels on its short side."""
    scale = SHORT_SIDE / min(width, height)
    width, height = round(width * scale), round(height * scale)
    return {"name": f"{width}x{height}", "width": width, "height": height, "dpi": None}


def poster_option(prompt: PosterPrompt, params: dict[str, Any]) -> dict[str, Any] | None:
    """The txt2img `poster` option of a request with copy (title, subtitle or call to action):
    its sizes, or the picture's own shape when it names none. None without copy."""
    if not (prompt.title or prompt.subtitle or prompt.cta):
        return None
    targets = [target.to_dict() for target in prompt.targets]
    return {
        "title": prompt.title,
        "subtitle": prompt.subtitle,
        "cta": prompt.cta,
        "targets": targets or [picture_target(params["width"], params["height"])],
        "layout": "auto",
        "ip": prompt.ip,
    }


def keep_posters(core: Core, record: JobRecord, job: dict[str, Any]) -> list[str]:
    """Keep each picture's finished posters in bot.db; the file to show for each picture: its
    first poster (the main size), or the picture itself when the job finished none."""
    finished = job["info"].get("posters") or []
    for index, posters in enumerate(finished):
        core.store.save_posters(record.job_id, index, record.params["poster"], posters)
    return [posters[0]["png"] for posters in finished] or record.outputs


def poster_option_of(core: Core, record: JobRecord, index: int) -> dict[str, Any]:
    """The `poster` option that renders picture `index` as it looks now (after any 换版式,
    改标题 or 换尺寸), for an HD job of it; {} when it is a picture without copy."""
    spec, _ = core.store.posters(record.job_id, index)
    return {"poster": spec} if spec else {}


def keyboard(language: str, job_id: str, index: int, finished: bool) -> Keyboard:
    """Under a finished poster: lay it out again or take its files; under a picture: add a title."""

    def button(action: str, label: str = "") -> Button:
        return Button(t(language, f"button_{label or action}"), f"{action}:{job_id}:{index}")

    if not finished:
        return [[button("title", "addtitle")]]
    return [
        [button("layout"), button("title", "retitle"), button("resize")],
        [button("png"), button("svg")],
    ]


def next_layout(poster: dict[str, Any]) -> str:
    """The layout after the poster's: top → bottom → side (landscape only) → top."""
    landscape = poster["width"] > poster["height"]
    cycle = LAYOUT_CYCLE if landscape else LAYOUT_CYCLE[:-1]
    current = poster["layout"]
    return cycle[(cycle.index(current) + 1) % len(cycle)] if current in cycle else cycle[0]


def current_spec(core: Core, record: JobRecord, index: int) -> dict[str, Any]:
    """The spec that laid picture `index` out last; for a picture without copy, its own shape."""
    spec, _ = core.store.posters(record.job_id, index)
    params = record.params
    blank = {"title": "", "subtitle": "", "cta": "", "layout": "auto", "ip": ""}
    return spec or blank | {"targets": [picture_target(params["width"], params["height"])]}


def caption(language: str, record: JobRecord, index: int, poster: dict[str, Any]) -> str:
    """The poster's candidate (or HD) number and seed, its channel, size and layout."""
    final = record.kind == "final"
    return t(
        language,
        "caption_final_poster" if final else "caption_poster",
        number=(record.picked if final else index) + 1,
        seed=record.seeds[index],
        channel=poster["name"],
        size=f"{poster['width']}×{poster['height']}",
        layout=t(language, f"layout_{poster['layout']}"),
    )


async def send_posters(
    core: Core,
    place: Place,
    language: str,
    record: JobRecord,
    index: int,
    posters: list[dict[str, Any]],
    documents: bool,
) -> None:
    """Each poster as a photo with the finishing buttons under the first (a print size past the
    chat's photo limits as its PNG file only); with `documents`, each PNG file as well."""
    send, buttons = core.outbox, keyboard(language, record.job_id, index, finished=True)
    for number, poster in enumerate(posters):
        picture = Picture(
            png=await core.engine.output(poster["png"]),
            caption=caption(language, record, index, poster),
            filename=f"poster-{record.seeds[index]}-{poster['width']}x{poster['height']}.png",
            keyboard=buttons if number == 0 else [],
        )
        sends = [send.send_photo] if picture.fits_photo else []
        sends += [send.send_document] if documents or not picture.fits_photo else []
        for send_one in sends:
            message_id = await core.follower.retrying(functools.partial(send_one, place, picture))
            core.store.remember_message(place.chat_id, message_id, record.job_id, index)
            picture = dataclasses.replace(picture, keyboard=[])  # the buttons once per poster


async def relayout(
    core: Core, event: Incoming | Press, record: JobRecord, index: int, spec: dict[str, Any]
) -> None:
    """Finish picture `index` again with `spec` (no generation), send the new poster(s) and
    keep them for the next press."""
    language = core.language(event.user)
    call = core.engine.finish_poster(spec, output=record.outputs[index])
    if (posters := await core.ask(event, language, call)) is None:
        return
    core.store.save_posters(record.job_id, index, spec, posters)
    await send_posters(core, event.place, language, record, index, posters, documents=False)


# --- buttons ------------------------------------------------------------------------------------


async def change_layout(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """换版式: the same copy and sizes in the next layout."""
    spec, posters = core.store.posters(record.job_id, index)
    if not posters:
        return t(core.language(press.user), "job_unknown")
    await relayout(core, press, record, index, spec | {"layout": next_layout(posters[0])})
    return None


async def ask_title(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """改标题 / 加标题: the reply to this message becomes the poster's title."""
    core.store.update_user(press.user.id, edit=f"title:{record.job_id}:{index}")
    text = t(core.language(press.user), "title_ask")
    await core.outbox.send(press.place, Reply(text, ask_reply=True))
    return None


async def title_reply(core: Core, message: Incoming, record: JobRecord, index: int) -> None:
    """The reply to 改标题 / 加标题: the picture laid out again with it as the title."""
    spec = current_spec(core, record, index) | {"title": message.text.strip()}
    await relayout(core, message, record, index, spec)


async def choose_size(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """换尺寸: the channels to fit the same picture to."""
    language = core.language(press.user)
    data = f"fit:{record.job_id}:{index}"
    buttons = [Button(name, f"{data}:{number}") for number, name in enumerate(channel_names())]
    await core.outbox.send(press.place, Reply(t(language, "size_ask"), rows(buttons, SIZE_ROW)))
    return None


async def fit(core: Core, press: Press, args: list[str]) -> str | None:
    """A channel chosen under 换尺寸 (`fit:job_id:index:channel`)."""
    *job_args, number = args or [""]
    return await job_button(functools.partial(fit_to_channel, number=number))(core, press, job_args)


async def fit_to_channel(
    core: Core, press: Press, record: JobRecord, index: int, number: str
) -> str | None:
    """The same picture and copy at channel `number`'s exact size (the layout chosen anew)."""
    names = channel_names()
    if not number.isdigit() or int(number) >= len(names):
        raise MalformedPress(f"no channel number {number!r}")
    target = channel_target(names[int(number)]).to_dict()
    spec = current_spec(core, record, index) | {"targets": [target], "layout": "auto"}
    await relayout(core, press, record, index, spec)
    return None


async def poster_files(
    core: Core, press: Press, record: JobRecord, index: int, suffix: str
) -> str | None:
    """原图 / SVG: each of the picture's posters as a file (`suffix` png or svg)."""
    language = core.language(press.user)
    _, posters = core.store.posters(record.job_id, index)
    for poster in posters:
        picture = Picture(
            png=await core.engine.output(poster[suffix]),
            caption=caption(language, record, index, poster),
            filename=f"poster-{record.seeds[index]}-{poster['width']}x{poster['height']}.{suffix}",
        )
        message_id = await core.outbox.send_document(press.place, picture)
        core.store.remember_message(press.place.chat_id, message_id, record.job_id, index)
    return None if posters else t(language, "job_unknown")


BUTTONS = {
    "layout": job_button(change_layout),
    "title": job_button(ask_title),
    "resize": job_button(choose_size),
    "fit": fit,
    "png": job_button(functools.partial(poster_files, suffix="png")),
    "svg": job_button(functools.partial(poster_files, suffix="svg")),
}
