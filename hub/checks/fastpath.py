"""The fast path of `POST /v1/checks` (and `/batch`): route middleware that answers itself.

It sits on the documented Litestar handler (`hub.checks.api.post_check`) and skips the
framework's per-request machinery (request object, dependency injection, signature model,
response object) on the happy path: read the body, decode it strictly into the same
`CheckRequest` as the handler (unknown fields forbidden, as `hub.api.strict` does),
authenticate with the same `Agencies.authenticate` and `require_scope`, ask the same
`CheckService`, and write the JSON answer. Whenever the body does not decode, it hands the
request, body and all, to the documented handler, so every validation problem is the
framework's own; `HubError`s propagate to the app's one exception handler, as from any
handler. Errors are therefore the same on both paths, byte for byte
(tests/integration/test_checks_api.py compares them).

`ENABLED` switches the fast path off (the documented handler then answers everything).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import (
    ASGIApp,
    HTTPRequestEvent,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from hub.agencies import require_scope
from schemas.checks import BatchRequest, CheckRequest

ENABLED = True

_encoder = msgspec.json.Encoder()
_JSON = (b"content-type", b"application/json")


MAX_BODY = 10_000_000
"""Litestar's own default `request_max_body_size`: the fast paths refuse what it refuses."""


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:  # never buffer an unbounded body in memory
            raise HTTPException(status_code=413, detail="Request Entity Too Large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def send_json(send: Send, status: int, payload: bytes) -> None:
    """Answer with a JSON body directly on the ASGI channel (what the fast routes skip)."""
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [_JSON, (b"content-length", str(len(payload)).encode())],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": payload, "more_body": False}
    await send(end)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> ReceiveMessage:
        nonlocal sent
        if not sent:
            sent = True
            message: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": False}
            return message
        return await receive()

    return replay


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


def _fast_route(decoder: msgspec.json.Decoder[Any], method: str) -> Callable[[ASGIApp], ASGIApp]:
    """Route middleware that answers with `hub.checks.<method>(agency, body)`."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if not ENABLED or scope["type"] != ScopeType.HTTP or scope.get("method") != "POST":
                await app(scope, receive, send)
                return
            body = await _read_body(receive)
            if b"\\u0000" in body:  # the normal route refuses NUL with the field named
                await app(scope, _replay(body, receive), send)
                return
            try:
                request = decoder.decode(body)
            except msgspec.DecodeError:
                await app(scope, _replay(body, receive), send)
                return
            hub: Any = scope["litestar_app"].state.hub
            agency = await hub.agencies.authenticate(_authorization(scope))
            structlog.contextvars.bind_contextvars(agency=agency.code)
            require_scope(agency, "check")
            if hub.checks is None:
                await app(scope, _replay(body, receive), send)
                return
            answer = await getattr(hub.checks, method)(agency, request)
            await send_json(send, 200, _encoder.encode(answer))

        return middleware

    return wrap


fast_check = _fast_route(msgspec.json.Decoder(CheckRequest), "check")
"""Route middleware for `POST /v1/checks`; the wrapped app is the documented handler."""
fast_batch = _fast_route(msgspec.json.Decoder(BatchRequest), "batch")
"""Route middleware for `POST /v1/checks/batch`."""
