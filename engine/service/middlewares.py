"""The service's middlewares: credentials first, then every error as JSON with its status.

A refused request is a 400 `{"error": "<field>: <English detail>", "field", "code", "values"}`
(`posterbot.errors`; a plain ValueError is `invalid_field`); a full queue a 429 with
`retry_after_s` and the code `queue_full`. docs/engine-api.md lists the codes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine.service.http import SERVICE, error_response
from engine.service.queue_common import JobNotFound, QueueFull
from engine.service.state import Service
from posterbot.errors import refusal_of


@web.middleware
async def errors_as_json(request: web.Request, handler: Callable[..., Awaitable[Any]]):
    """Every error as `{"error": "<field or reason>: <message>", ...}` with the right status."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SERVICE].config.engine.max_body_bytes
        return error_response(413, f"body: larger than {limit} bytes (engine.max_body_bytes)")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {
            k: v for k, v in exc.headers.items() if k not in ("Content-Type", "Content-Length")
        }
        return error_response(exc.status, exc.text or exc.reason, headers)
    except QueueFull as exc:
        headers = {"Retry-After": str(exc.retry_after_s)}
        return error_response(
            429,
            f"queue: {exc}",
            headers,
            retry_after_s=exc.retry_after_s,
            code="queue_full",
        )
    except JobNotFound as exc:
        return error_response(404, f"job: no job {exc.args[0]!r}")
    except ValueError as exc:
        refusal = refusal_of(exc)
        values = {name: shorten(value) for name, value in refusal.values.items()}
        return error_response(
            400, shorten(str(exc)), field=refusal.field, code=refusal.code, values=values
        )


MAX_ERROR_CHARS = 300  # a refusal quotes the value it refuses: a 1 MB value is not echoed back


def shorten(value: Any) -> Any:
    """Long text (a quoted request value) cut to MAX_ERROR_CHARS; other values unchanged."""
    if isinstance(value, str) and len(value) > MAX_ERROR_CHARS:
        return value[: MAX_ERROR_CHARS - 1] + "…"
    return value


# WebUI's API: its own routes and the ControlNet extension's, both behind --api-auth
WEBUI_PREFIXES = ("/sdapi/", "/controlnet/")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _authorized(request: web.Request, svc: Service) -> bool:
    """Bearer token anywhere; on WebUI's routes also WebUI's basic auth."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    if svc.token and scheme.lower() == "bearer" and _same(credentials.strip(), svc.token):
        return True
    if svc.api_auth and scheme.lower() == "basic" and request.path.startswith(WEBUI_PREFIXES):
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        return _same(decoded, svc.api_auth)
    return False


@web.middleware
async def require_auth(request: web.Request, handler: Callable[..., Awaitable[Any]]):
    """401 unless the request carries the credentials its path needs (/healthz is open)."""
    svc = request.app[SERVICE]
    webui = request.path.startswith(WEBUI_PREFIXES)
    needed = svc.token is not None or (webui and svc.api_auth is not None)
    if request.path == "/healthz" or not needed or _authorized(request, svc):
        return await handler(request)
    challenge = 'Basic realm="posterbot"' if webui and svc.api_auth else "Bearer"
    return error_response(
        401, "auth: missing or wrong credentials", {"WWW-Authenticate": challenge}
    )
