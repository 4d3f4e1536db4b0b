"""One mapping of every error to RFC 9457 problem details (`application/problem+json`).

Each problem names what failed: `field` (a dotted path into the body or the parameter name)
for bad input, `rule` for a refusal by a domain rule. Unexpected errors are logged with the
request id and answered 500 without internals.
"""

from __future__ import annotations

import re
from typing import Any

import structlog
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException

from hub.errors import HubError

log = structlog.get_logger(__name__)
PROBLEM = "application/problem+json"
TYPE_BASE = "https://credit-hub.example/problems/"
_AT = re.compile(r"at `\$\.?([^`]*)`")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    kind: str,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": TYPE_BASE + kind,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def field_of(message: str) -> str | None:
    """The dotted field path in a msgspec message such as "... - at `$.subject.id`"."""
    found = _AT.search(message)
    path = found.group(1).replace("[", ".").replace("]", "") if found else ""
    named = _UNKNOWN.search(message) or _MISSING.search(message)
    if named:
        path = f"{path}.{named.group(1)}" if path else named.group(1)
    return path or None


def on_hub_error(request: Request[Any, Any, Any], exc: HubError) -> Response[dict[str, Any]]:
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
    if exc.status == 401:  # noqa: PLR2004 - HTTP requires the challenge on every 401
        headers["WWW-Authenticate"] = 'Bearer realm="credit-hub"'

    return problem(
        exc.status,
        exc.title,
        exc.detail,
        kind=exc.kind,
        instance=request.url.path,
        headers=headers or None,
        field=exc.field,
        rule=exc.rule,
    )


def on_validation(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if isinstance(item, dict):
            message = str(item.get("message", ""))
            key = field_of(message) or item.get("key")
            if key == "data":
                key = None
            errors.append({"field": key, "message": message, "source": item.get("source")})
    detail = str(errors[0]["message"] if errors else exc.detail)
    field = errors[0]["field"] if errors else None
    return problem(
        400,
        "Invalid input",
        detail or "the request is not valid",
        kind="invalid-input",
        instance=request.url.path,
        field=field,
        errors=errors or None,
    )


def on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    # Litestar answers 400 itself only when it cannot read the body (malformed JSON)
    field = "body" if exc.status_code == 400 else None  # noqa: PLR2004
    return problem(
        exc.status_code,
        str(exc.detail) or "Error",
        str(exc.detail),
        kind=f"http-{exc.status_code}",
        instance=request.url.path,
        headers=exc.headers,
        field=field,
    )


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("unhandled_error", path=request.url.path, exc_info=exc)
    return problem(
        500,
        "Internal error",
        "the hub failed to answer; the error is logged",
        kind="internal",
        instance=request.url.path,
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    HubError: on_hub_error,
    ValidationException: on_validation,
    HTTPException: on_http,
    Exception: on_unexpected,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM", "MediaType", "field_of", "problem"]
