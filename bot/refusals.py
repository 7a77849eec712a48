"""Why the engine said no, in the chat user's language.

The engine gives every refusal and job failure a stable code with values (docs/engine-api.md);
each code has a catalog entry `refusal.<code>`. Its English detail goes to the log (and,
where no entry fits, to admins), never as-is to a user: it may name server paths.
"""

from __future__ import annotations

import logging
from typing import Any

from bot.i18n import Html, catalog, t
from engine.service.client import EngineError
from posterbot.errors import refusal_of

log = logging.getLogger(__name__)

# A job that ended without a code still says why by its state.
STATE_CODES = {"cancelled": "cancelled", "dead": "worker_died"}


def reason(language: str, code: str, values: dict[str, Any]) -> Html | None:
    """The catalog's wording of `code`, or None when the catalog has none (or values lack)."""
    key = f"refusal.{code}"
    if not code or key not in catalog(language):
        return None
    try:
        return t(language, key, **values)
    except (KeyError, IndexError):
        log.warning("engine reason %s came without its values: %r", code, values)
        return None


def request_refusal(language: str, exc: ValueError) -> Html:
    """Why the prompt builder could not read a request, in the user's language; its English
    detail goes to the log only."""
    refusal = refusal_of(exc)
    log.info("request refused (%s): %s", refusal.code, refusal)
    return reason(language, refusal.code, refusal.values) or t(language, "refusal.generic")


def refusal_text(language: str, exc: EngineError, *, admin: bool) -> Html:
    """A refused request: the code's wording, else a generic text (admins also see the
    engine's own words, the log keeps them for everyone)."""
    log.info("engine refused (%s): %s", exc.code or "no code", exc)
    # A training rule our catalog words better than the code's generic text; /train is for
    # admins, who also get the engine's exact values.
    rule = f"rule_{exc.values.get('name') or getattr(exc, 'field', '')}"
    if admin and exc.code in ("train_param_invalid", "") and rule in catalog(language):
        return t(language, "train_refused", rule=t(language, rule), detail=str(exc))
    if (said := reason(language, exc.code, exc.values)) is not None:
        return said
    if admin:
        return t(language, "refusal.generic_admin", detail=str(exc))
    return t(language, "refusal.generic")


def failure_text(language: str, job: dict[str, Any], *, admin: bool) -> Html:
    """Why a job ended without a result: the code's wording, else a generic text; `admin`
    (admins' jobs: trainings, grids) adds the engine's own words, which may name paths."""
    code = job.get("error_code") or STATE_CODES.get(job["state"], "")
    detail = job.get("error") or job["state"]
    log.info("job %s ended %s (%s): %s", job.get("id"), job["state"], code or "no code", detail)
    if (said := reason(language, code, job.get("error_values") or {})) is not None:
        return said
    if admin:
        return t(language, "refusal.generic_admin", detail=detail)
    return t(language, "refusal.generic")
