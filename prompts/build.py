"""Build a poster prompt: the template step, then (when configured) the LLM step over it.

This is what the bot and `posterbot prompt` call. The LLM may only improve the sentence and the
content tags of the template's draft; any failure keeps the template result and says why in
`notes`. Raw WebUI prompts never go to the LLM: they pass through as typed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace

import aiohttp

from posterbot.config import Config, Preset
from prompts.llm import API_KEY_ENV, LLMError, ask_llm
from prompts.notes import Note
from prompts.spec import PosterPrompt
from prompts.template import DEFAULT_SUBJECT, finish, parse_request


def llm_api_key(environ: Mapping[str, str] | None = None) -> str:
    """The LLM key from POSTERBOT_LLM_API_KEY ("" = none, fine for local endpoints)."""
    return (os.environ if environ is None else environ).get(API_KEY_ENV, "")


async def build_prompt(
    request: str,
    config: Config,
    *,
    template: Preset | None = None,
    ip_name: str | None = None,
    use_llm: bool | None = None,
    api_key: str | None = None,
    session: aiohttp.ClientSession | None = None,
) -> PosterPrompt:
    """A chat request (or raw WebUI prompt) -> PosterPrompt.

    template: the user's parameter template (a config preset or one the bot stored).
    ip_name: the user's chosen IP; an IP named in the request wins.
    use_llm: None = config llm.enabled. api_key: None = from POSTERBOT_LLM_API_KEY.
    session: an aiohttp session to reuse for the LLM call.
    Raises ValueError naming the argument when the request is invalid or over [limits].
    """
    draft = parse_request(request, config, template=template, ip_name=ip_name)
    wants_llm = config.llm.enabled if use_llm is None else use_llm
    if not wants_llm or draft.raw_prompt:
        return finish(draft)
    ip = draft.ip
    forbidden = [word for other in config.ips for word in (other.trigger, other.lora)]
    try:
        answer = await ask_llm(
            request=draft.request,
            subject=(ip.description if ip else "") or DEFAULT_SUBJECT,
            hints=draft.content_tags,
            forbidden_words=forbidden,
            llm=config.llm,
            api_key=llm_api_key() if api_key is None else api_key,
            session=session,
            unwanted=draft.negative_tags,
        )
    except LLMError as exc:
        return finish(draft, notes=[Note("llm_skipped", {"reason": str(exc)})])
    improved = replace(draft, sentence=answer.natural_language, content_tags=answer.tags)
    return finish(improved, source="llm", notes=answer.notes)
