"""放大 (upscale ×2 / ×4) and 修脸 (face restoration) on a picture the chat delivered: one
"extras" engine job (WebUI's Extras) on the stored result, followed and delivered like every job,
the new picture as a photo and as its PNG file, with the same buttons under it.

放大 is always offered (Lanczos exists everywhere; an ESRGAN-family model is used when the
engine has one); 修脸 only when the engine has a face restoration model.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import replace
from typing import Any

from bot.core import Core, job_button
from bot.follower import Delivery
from bot.i18n import t
from bot.replies import Button, Keyboard, Picture, Press, engine_user
from bot.status import StatusMessage
from bot.store import JobRecord
from engine.service.client import EngineError

log = logging.getLogger(__name__)

FACTORS = (2, 4)
KIND = "retouch"  # the bot's job kind (its delivery); the engine's is "extras"


async def engine_has(core: Core, listing: str) -> list[dict[str, Any]]:
    """`face_restorers` or `esrgan_models` of the engine; none when it cannot say."""
    try:
        return await getattr(core.engine, listing)()
    except EngineError:
        log.warning("engine did not list %s", listing, exc_info=True)
        return []


async def keyboard(core: Core, language: str, job_id: str, index: int) -> Keyboard:
    """The row under a delivered picture: 放大 ×2, ×4, and 修脸 when a restorer is installed."""
    buttons = [
        Button(t(language, "button_upscale", factor=factor), f"up{factor}:{job_id}:{index}")
        for factor in FACTORS
    ]
    if await engine_has(core, "face_restorers"):
        buttons.append(Button(t(language, "button_faces"), f"faces:{job_id}:{index}"))
    return [buttons]


def shown_picture(core: Core, record: JobRecord, index: int) -> str:
    """The output the chat showed for picture `index`: its finished poster (main size) when it
    has one, else the picture."""
    _, posters = core.store.posters(record.job_id, index)
    return posters[0]["png"] if posters else record.outputs[index]


async def upscale(core: Core, press: Press, record: JobRecord, index: int, factor: int) -> str:
    """放大 ×factor with the engine's first ESRGAN-family model, else Lanczos."""
    language = core.language(press.user)
    models = await engine_has(core, "esrgan_models")
    upscaler = models[0]["name"] if models else "Lanczos"
    params = {"upscaler_1": upscaler, "upscaling_resize": factor}
    summary = t(language, "upscale_summary", factor=factor, upscaler=upscaler)
    await submit(core, press, language, record, index, params, summary)
    return t(language, "started")


async def restore_faces(core: Core, press: Press, record: JobRecord, index: int) -> str:
    """修脸 with the engine's face restorer at full visibility."""
    language = core.language(press.user)
    params = {"gfpgan_visibility": 1}
    await submit(core, press, language, record, index, params, t(language, "faces_summary"))
    return t(language, "started")


async def submit(
    core: Core,
    press: Press,
    language: str,
    record: JobRecord,
    index: int,
    params: dict[str, Any],
    summary: str,
) -> None:
    """One extras job on the picture the chat showed, followed like every job."""
    if limited := core.over_limit(press.user.id):
        await core.say(press.place, language, limited[0], **limited[1])
        return
    params = {"image": {"output": shown_picture(core, record, index)}, **params}
    call = core.engine.submit(
        params,
        user=engine_user(press.user.id),
        kind="extras",
        priority="admin" if core.is_admin(press.user.id) else "user",
        idempotency_key=core.job_key(press),
    )
    job = await core.ask(press, language, call)
    if job is None or core.store.job(job["id"]) is not None:
        return  # refused (and said), or a press handled before a restart
    new = JobRecord(job["id"], press.user.id, press.place, KIND, record.request, params, language)
    new.summary = summary
    await core.follower.start(new, job.get("position"))


async def deliver_retouched(
    core: Core, record: JobRecord, job: dict[str, Any], status: StatusMessage
) -> None:
    """The new picture as a photo (with the buttons again) and as the PNG file; only the file
    when it is past what Telegram shows as a photo."""
    record.outputs = list(job["outputs"])
    core.store.save_job(record)
    png = await core.engine.output(record.outputs[0])
    size = f"{job['info']['width']}×{job['info']['height']}"
    buttons = await keyboard(core, record.language, record.job_id, 0)
    file = Picture(png, t(record.language, "retouched", size=size), f"{record.job_id}.png")
    send, place = core.outbox, record.place
    sends = [functools.partial(send.send_document, place, replace(file, keyboard=buttons))]
    if file.fits_photo:  # a photo to look at (with the buttons), then the file as it is
        photo = replace(file, keyboard=buttons)
        sends = [
            functools.partial(send.send_photo, place, photo),
            functools.partial(send.send_document, place, file),
        ]
    for sent in sends:
        message_id = await core.follower.retrying(sent)
        core.store.remember_message(place.chat_id, message_id, record.job_id, 0)


BUTTONS = {
    "up2": job_button(functools.partial(upscale, factor=2)),
    "up4": job_button(functools.partial(upscale, factor=4)),
    "faces": job_button(restore_faces),
}
DELIVERIES = {KIND: Delivery(deliver_retouched)}
