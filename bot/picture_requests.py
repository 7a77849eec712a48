"""How a poster request uses the picture it came with (a photo, or one of our results): drawn
from as img2img, or, when the message asks for the picture's sketch, composition or pose, drawn
fresh with a ControlNet unit over it. Returns the job's params and the note for the
acknowledgement; the chat features (posters, pictures) call it."""

from __future__ import annotations

from typing import Any

from bot.core import Core
from bot.i18n import t
from engine.service.client import EngineError
from prompts.lexicon import load_glossary
from prompts.picture import (
    CONTROL_MODULES,
    control_model,
    from_picture,
    names_a_size,
    with_control,
)


async def picture_params(
    core: Core,
    language: str,
    request: str,
    intent: str | None,
    params: dict[str, Any],
    picture: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """The params drawn from `picture` ({"image", "size"}) and the note saying how."""
    keep_shape = not names_a_size(request, load_glossary(core.config.prompts.glossary_dir))
    image, size = picture["image"], picture["size"]
    if intent is not None:
        control = await control_unit(core, intent)
        if control is not None:
            module, model, used = control
            changed = with_control(params, image, size, module, model, keep_shape)
            note = t(language, f"from_{used}", model=model.split(" [")[0])
            return changed, (t(language, "pose_as_layout") if used != intent else "") + note
        fallback = t(language, "control_missing")
    else:
        fallback = ""
    strength = core.config.bot.picture_strength
    changed = from_picture(params, image, size, strength, keep_shape)
    note = t(language, "from_picture", strength=f"{strength:g}")
    return changed, f"{fallback}{note}"


async def control_unit(core: Core, intent: str) -> tuple[str, str, str] | None:
    """(preprocessor, model, the intent served) on this engine, or None when it has no
    ControlNet model for it (a pose needs the openpose preprocessor too; without it the
    picture's outlines serve: the layout intent)."""
    try:
        models = await core.engine.controlnet_models()
        modules = await core.engine.controlnet_modules()
    except EngineError:
        return None
    configured = core.config.bot.controlnet_models.get(intent, "")
    if intent == "pose" and CONTROL_MODULES["pose"] not in modules:
        intent = "layout"  # no pose annotator installed: follow the picture's outlines
        configured = core.config.bot.controlnet_models.get(intent, "")
    model = control_model(intent, models, configured)
    return (CONTROL_MODULES[intent], model, intent) if model else None
