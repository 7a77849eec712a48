"""What every view shares: the service on the application, blocking calls off the event loop,
JSON bodies and JSON errors."""

from __future__ import annotations

import asyncio
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


MAX_JSON_DEPTH = 32  # our requests nest 4 deep (params.poster.targets[i]); WebUI's ~5


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object (400 otherwise; 413 past engine.max_body_bytes)."""
    try:
        body = await request.json()
    except RecursionError:  # `[[[[...` nested past Python's recursion limit
        raise Refusal("body", f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # bad JSON or UTF-8, an integer of more than 4300 digits
        raise Refusal("body", f"not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(body, dict):
        raise Refusal("body", "must be a JSON object")
    if json_depth(body) > MAX_JSON_DEPTH:  # anything deeper would recurse in repr() and dumps()
        raise Refusal("body", f"nested deeper than {MAX_JSON_DEPTH} levels")
    return body


def json_depth(value: Any) -> int:
    """How deep lists and objects nest in `value` (1 for a flat object), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in children)
    return deepest
