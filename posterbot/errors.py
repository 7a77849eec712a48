"""Stable error codes: what the engine refuses, and why a job failed, as a machine code with the
values its message is made of, beside the English text (docs/engine-api.md lists the codes).

A chat maps the code to its own wording in the user's language; the English text stays for
logs, the CLI and WebUI clients. Stdlib only: the params and training checks, the service and
the workers all raise or read these.
"""

from __future__ import annotations

from typing import Any


class Refusal(ValueError):
    """A request refused because of one field: `str()` is the English "field: detail"."""

    def __init__(
        self, field: str, detail: str, code: str = "invalid_field", /, **values: Any
    ) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.code = code
        self.values = {"field": field} if code == "invalid_field" else values


class Failure(Exception):
    """A job that could not finish for a reason the worker knows (out of memory, ...)."""

    def __init__(self, message: str, code: str, **values: Any) -> None:
        super().__init__(message)
        self.code = code
        self.values = values


def refusal_of(exc: ValueError) -> Refusal:
    """Any ValueError as a `Refusal`: a plain one ("field: detail") is `invalid_field`."""
    if isinstance(exc, Refusal):
        return exc
    field, _, detail = str(exc).partition(": ")
    return Refusal(field, detail) if detail else Refusal("request", field)


def code_of(exc: Exception) -> tuple[str, dict[str, Any]]:
    """The code and values a job failure records for `exc`."""
    if isinstance(exc, Failure):
        return exc.code, exc.values
    if isinstance(exc, ValueError):
        refusal = refusal_of(exc)
        return refusal.code, refusal.values
    return "internal", {}
