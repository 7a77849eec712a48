"""Pictures in: a photo or image sent to the bot becomes the start of a poster (img2img).

A photo with a caption is a request drawn from it straight away; a photo alone is kept (by the
engine) and a later reply to it with a request draws from it. Replying to one of our own results
works the same way (bot/features/posters.py: `replied_picture`). Under candidates drawn from a
picture, "更像原图 / 更自由" draw a new set one strength step closer to it or freer from it.
"""

from __future__ import annotations

from pathlib import Path

from bot.core import Core, job_button
from bot.features import posters
from bot.i18n import t
from bot.replies import Incoming, Press
from bot.store import JobRecord
from prompts.picture import stepped_strength

PICTURE_SUFFIXES = {".jpg", ".jpeg", ".webp"}  # PNG documents are read for /info (history)


def is_picture(core: Core, user_id: int, filename: str, as_photo: bool) -> bool:
    """A photo, or a JPEG/WEBP sent as a file."""
    return as_photo or Path(filename).suffix.lower() in PICTURE_SUFFIXES


async def picture_file(core: Core, message: Incoming) -> None:
    """Keep the picture; with a caption, draw the request from it now."""
    if not await core.admitted(message):
        return
    language = core.language(message.user)
    if message.document is None:
        await core.say(message.place, language, "picture_too_large")
        return
    stored = await core.ask(message, language, core.engine.upload_picture(message.document))
    if stored is None:
        return
    core.store.remember_picture(message.place.chat_id, message.message_id, stored)
    if not message.text.strip():
        await core.say(message.place, language, "picture_received")
        return
    picture = {"image": stored["input"], "size": (stored["width"], stored["height"])}
    await posters.poster(core, message, message.text, picture=picture)


async def closer(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """A new set one step closer to the picture."""
    return await restrengthened(core, press, record, -1)


async def freer(core: Core, press: Press, record: JobRecord, index: int) -> str | None:
    """A new set one step freer from the picture."""
    return await restrengthened(core, press, record, +1)


async def restrengthened(core: Core, press: Press, record: JobRecord, direction: int) -> str:
    language = core.language(press.user)
    strength = record.params.get("denoising_strength", core.config.bot.picture_strength)
    stepped = stepped_strength(strength, direction)
    if stepped == strength:
        return t(language, "strength_at_end")
    changes = {"denoising_strength": stepped, "seed": -1}
    await posters.rerun(core, press, record, "strength_summary", **changes)
    return t(language, "started")


FILES = [(is_picture, picture_file)]
BUTTONS = {"closer": job_button(closer), "freer": job_button(freer)}
