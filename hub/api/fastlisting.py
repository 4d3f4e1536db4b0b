"""The fast path of `POST /v1/listings`: route middleware that answers itself.

It sits on the documented Litestar handler (`hub.api.listings.ListingController.create`) and
skips the framework's per-request machinery (request object, guards, dependency injection,
signature model, response object) on the happy path: read the body, decode it with the same
strict msgspec decoder as `hub.api.strict` (unknown fields forbidden, no lax conversion),
authenticate with the same `Agencies.authenticate` and `require_scope`, ask the same
`ListingService.register`, and write the JSON answer (201 for a new listing, 200 for a repeat).
Whenever the body does not decode strictly, holds a NUL, or the request carries a query
string, it hands the request, body and all, to the documented handler, so every validation
problem is the framework's own; `HubError`s propagate to the app's one exception handler, as
from any handler. Errors are therefore the same on both paths, byte for byte
(tests/integration/test_listings_fastpath.py compares them).

`ENABLED` switches the fast path off (the documented handler then answers everything).
"""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    Receive,
    Scope,
    Send,
)

from hub.agencies import require_scope
from hub.checks.fastpath import _ERROR, _authorization, _read_body, _replay, send_json
from schemas.listing import NewListing

ENABLED = True

_decoder = msgspec.json.Decoder(NewListing)
_encoder = msgspec.json.Encoder()
_JSON = (b"content-type", b"application/json")


def fast_create(app: ASGIApp) -> ASGIApp:
    """Route middleware for `POST /v1/listings`; the wrapped app is the documented handler."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        handed: tuple[BaseException, str | None] | None = scope.pop(_ERROR, None)  # type: ignore[misc]
        if handed is not None:  # met by `Dispatching` answering ahead of the framework
            error, agency_code = handed
            if agency_code is not None:
                structlog.contextvars.bind_contextvars(agency=agency_code)
            raise error
        if (
            not ENABLED
            or scope["type"] != ScopeType.HTTP
            or scope.get("method") != "POST"
            or scope.get("query_string")
        ):
            await app(scope, receive, send)
            return
        body = await _read_body(receive)
        if b"\\u0000" in body:  # the normal route refuses NUL with the field named
            await app(scope, _replay(body, receive), send)
            return
        try:
            data = _decoder.decode(body)
        except msgspec.DecodeError:  # ValidationError included: the framework words it
            await app(scope, _replay(body, receive), send)
            return
        hub: Any = scope["litestar_app"].state.hub
        agency = await hub.agencies.authenticate(_authorization(scope))
        structlog.contextvars.bind_contextvars(agency=agency.code)
        require_scope(agency, "publish")
        result, created = await hub.listings.register(agency, data)
        await send_json(send, 201 if created else 200, _encoder.encode(result))

    return middleware
