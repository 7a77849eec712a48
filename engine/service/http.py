"""What every view shares: the service on the application, blocking calls off the event loop,
JSON bodies and JSON errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from engine.service.state import Service
from posterbot.errors import Refusal

SERVICE = web.AppKey("service", Service)


def service(request: web.Request) -> Service:
    return request.app[SERVICE]


async def blocking(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking (SQLite, file) call off the event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, **details: Any
) -> web.Response:
    """`{"error": message, **details}` with `status`."""
    return web.json_response({"error": message, **details}, status=status, headers=headers)


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (400 otherwise; 413 past engine.max_body_bytes)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Refusal("body", f"not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise Refusal("body", "must be a JSON object")
    return body
