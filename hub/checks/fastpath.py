"""The fast path of `POST /v1/checks` (and `/batch`): answered ahead of Litestar.

`POST /v1/listings` is answered the same way (`LISTINGS`): its body decoded into
`NewListing`, scope `publish`, `hub.listings.register`, 201 or 200, the listing's id in the
access line; its route middleware is `hub.api.fastlisting.fast_create`.

`Dispatching` is the application (`Litestar` with its ASGI entry point, `__call__`, ahead of
the framework) and answers these two routes itself, without the framework's per-request
machinery (exception middleware, router, the `observe`
middleware's wrappers, request object, dependency injection, signature model, response
object): read the body, decode it strictly into the same `CheckRequest` as the documented
handler (`hub.checks.api.post_check`; unknown fields forbidden, as `hub.api.strict` does),
authenticate with the same `Agencies.authenticate` and `require_scope`, ask the same
`CheckService`, and write the JSON answer with the request id, the request metrics and the
access log line that `hub.api.app.observe` gives every request.

Anything else goes through Litestar unchanged, body and all: a query string, a body that
does not decode or holds NUL, a body over `MAX_BODY`, a hub without checks. So does any
error raised while answering: it is handed to the route middleware below (`fast_check`,
`fast_batch`), which raises it where the documented handler would, so the app's one
exception handler answers it and `observe` logs and counts it, as for any handler. Errors
are therefore the same on both paths, byte for byte (tests/integration/test_checks_api.py
compares them). The route middleware also answers by itself when a request reaches the
route some other way (it is the fast path of the Litestar route).

`ENABLED` switches both off (the documented handler then answers everything).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import (
    ASGIApp,
    HTTPRequestEvent,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    HTTPScope,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from hub.agencies import require_scope
from hub.metrics import Tally, Timings
from schemas.checks import BatchRequest, CheckRequest
from schemas.listing import NewListing

ENABLED = True
LISTINGS = True
"""Whether `Dispatching` also answers `POST /v1/listings` (else `hub.api.fastlisting`'s route
middleware does, behind the framework)."""

log = structlog.get_logger(__name__)
_encoder = msgspec.json.Encoder()
_JSON = (b"content-type", b"application/json")
_ERROR = "hub.checks.error"
"""Scope key: (the error the dispatcher met, the agency code bound when it was met)."""

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


async def _rest_of_body(message: ReceiveMessage, receive: Receive) -> tuple[bytes, bool]:
    """From the first `message` on: (the body, True) or, past `MAX_BODY` or on a disconnect,
    (what was read, False)."""
    chunks = []
    size = 0
    while message["type"] == "http.request":
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY or not message.get("more_body", False):
            return b"".join(chunks), size <= MAX_BODY and not message.get("more_body", False)
        message = await receive()
    return b"".join(chunks), False


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


def _replay(body: bytes, receive: Receive, *, more: bool = False) -> Receive:
    """`receive` that gives `body` first (`more`: the rest still follows), then the rest."""
    sent = False

    async def replay() -> ReceiveMessage:
        nonlocal sent
        if not sent:
            sent = True
            message: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": more}
            return message
        return await receive()

    return replay


_ID = b"x-request-id"
_LENGTHS: dict[int, tuple[bytes, bytes]] = {}
_MAX_LENGTHS = 4096


def _content_length(size: int) -> tuple[bytes, bytes]:
    """The `content-length` header of `size`, encoded once per size (answers of a check
    come in a few sizes)."""
    header = _LENGTHS.get(size)
    if header is None:
        header = (b"content-length", str(size).encode())
        if len(_LENGTHS) < _MAX_LENGTHS:
            _LENGTHS[size] = header
    return header


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode("latin-1"))
    return None


def _fast_route(decoder: msgspec.json.Decoder[Any], method: str) -> Callable[[ASGIApp], ASGIApp]:
    """Route middleware that answers with `hub.checks.<method>(agency, body)`, or raises the
    error the dispatcher met."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            handed: tuple[BaseException, str | None] | None = scope.pop(_ERROR, None)  # type: ignore[misc]
            if handed is not None:
                error, agency_code = handed
                if agency_code is not None:
                    structlog.contextvars.bind_contextvars(agency=agency_code)
                raise error
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


_check_decoder = msgspec.json.Decoder(CheckRequest)
_batch_decoder = msgspec.json.Decoder(BatchRequest)
fast_check = _fast_route(_check_decoder, "check")
"""Route middleware for `POST /v1/checks`; the wrapped app is the documented handler."""
fast_batch = _fast_route(_batch_decoder, "batch")
"""Route middleware for `POST /v1/checks/batch`."""

_ROUTES: dict[str, tuple[msgspec.json.Decoder[Any], str]] = {
    "/v1/checks": (_check_decoder, "check"),
    "/v1/checks/batch": (_batch_decoder, "batch"),
    "/v1/listings": (msgspec.json.Decoder(NewListing), "register"),
}


_TALLIES: dict[tuple[int, int], tuple[Tally, Timings]] = {}
"""The tallies of the metric children (which live as long as the process), shared by every
app built in the process (tests build many), so they do not pile up."""


def _tallied(
    metrics_for: Callable[[str, str, int], tuple[Any, Any]],
) -> Callable[[str, str, int], tuple[Tally, Timings]]:
    """`metrics_for`, its children fed through a Tally and Timings each."""
    tallied: dict[tuple[str, str, int], tuple[Tally, Timings]] = {}

    def tallies(method: str, route: str, status: int) -> tuple[Tally, Timings]:
        key = (method, route, status)
        found = tallied.get(key)
        if found is None:
            counter, latency = metrics_for(method, route, status)
            children = (id(counter), id(latency))  # global metrics: one tally each, per process
            found = _TALLIES.get(children)
            if found is None:
                found = _TALLIES[children] = (Tally(counter), Timings(latency))
            tallied[key] = found
        return found

    return tallies


class Dispatching(Litestar):
    """The Litestar application, with `POST /v1/checks`, `/batch` and `POST /v1/listings`
    answered ahead of it.

    `Litestar.__call__` is the ASGI entry point that uvicorn calls, so the two routes are
    answered right there: one coroutine frame between the server and the usage log's commit,
    nothing of the framework per request. `answer_checks` switches it on with `observe`'s
    `request_id` and `metrics_for`, so the id, the metrics (by route and status) and the
    access log line are those of every other request; the metric children are fed through
    `hub.metrics.Tally` and `Timings` (plain numbers, added before a scrape). Everything
    else, and every error, is `Litestar.__call__`'s.
    """

    hub: Any = None
    """`state.hub`, set beside it by the lifespan (State's attribute lookup: 0.3 us)."""
    _request_id: Callable[[], str]
    _tallies: Callable[[str, str, int], tuple[Tally, Timings]] | None = None
    _logger: Any = None

    def answer_checks(
        self,
        *,
        request_id: Callable[[], str],
        metrics_for: Callable[[str, str, int], tuple[Any, Any]],
    ) -> None:
        self._request_id = request_id
        self._tallies = _tallied(metrics_for)

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        http: HTTPScope = scope  # type: ignore[assignment] # unless its type says otherwise
        if (
            http["type"] != ScopeType.HTTP
            or http["method"] != "POST"
            or (route := _ROUTES.get(http["path"])) is None
            or http["query_string"]
            or not ENABLED
            or (route[1] == "register" and not LISTINGS)
            or self._tallies is None
            or self.hub is None
            or self.before_send
        ):
            await Litestar.__call__(self, scope, receive, send)
            return
        http_receive: Receive = receive  # type: ignore[assignment]
        started = time.perf_counter()
        message = await http_receive()  # the usual case: the whole body in one message
        if message["type"] == "http.request" and not message.get("more_body", False):
            body = message.get("body", b"")
            whole = len(body) <= MAX_BODY
        else:
            body, whole = await _rest_of_body(message, http_receive)
        decoder, method = route
        request = _decoded(decoder, body) if whole else None
        if request is None:  # the framework explains what is wrong
            await Litestar.__call__(self, scope, _replay(body, http_receive, more=not whole), send)
            return
        hub: Any = self.hub
        checks = hub.checks
        if checks is None and method != "register":
            await Litestar.__call__(self, scope, _replay(body, http_receive), send)
            return
        code: str | None = None
        try:
            authorization = _authorization(http)
            agencies = hub.agencies
            agency = agencies.known(authorization) or await agencies.authenticate(authorization)
            code = agency.code
            if method == "check" and request.min_position is None:  # the usual check, inline
                require_scope(agency, "check")
                answer, committed = checks.enter(agency, request)
                payload = _encoder.encode(answer)
                await committed  # answered only once its record is on disk
                checks.answered(answer.decision, started)
                answered, listing_id = 200, None
            else:
                answered, payload, listing_id = await _answer(hub, method, agency, request)
        except Exception as exc:  # answered by the app's exception handler, via the route
            http[_ERROR] = (exc, code)  # type: ignore[literal-required]
            await Litestar.__call__(self, scope, _replay(body, http_receive), send)
            return
        # sent as `observe` sends every answer: with the request id, counted, timed and logged
        ident = self._request_id()
        logged = self._bind(ident, code, listing_id)
        status = 500
        http_send: Send = send  # type: ignore[assignment]
        try:
            start: HTTPResponseStartEvent = {
                "type": "http.response.start",
                "status": answered,
                "headers": [_JSON, _content_length(len(payload)), (_ID, ident.encode())],
            }
            status = answered
            await http_send(start)
            end: HTTPResponseBodyEvent = {
                "type": "http.response.body",
                "body": payload,
                "more_body": False,
            }
            await http_send(end)
        finally:
            self._observe(http["path"], status, started, logged)

    def _bind(self, ident: str, code: str | None, listing_id: str | None = None) -> bool:
        """Whether the access line is logged; if so, its context bound as `observe` binds it
        (nothing else logs on this path), with the listing's id for a listing."""
        logger = self._logger
        if logger is None:  # what the module's lazy proxy resolves to on its first use
            logger = self._logger = log.bind()
        if not logger.is_enabled_for(logging.INFO):
            return False
        structlog.contextvars.clear_contextvars()
        if listing_id is None:
            structlog.contextvars.bind_contextvars(request_id=ident, agency=code)
        else:
            structlog.contextvars.bind_contextvars(
                request_id=ident, agency=code, listing_id=listing_id
            )
        return True

    def _observe(self, path: str, status: int, started: float, logged: bool) -> None:
        """`observe`'s metrics and access line of an answer."""
        elapsed = time.perf_counter() - started
        counter, latency = self._tallies("POST", path, status)  # type: ignore[misc]
        counter.inc()
        latency.observe(elapsed)
        if logged:
            self._logger.info(
                "request", method="POST", path=path, status=status, ms=round(elapsed * 1000, 2)
            )


async def _answer(
    hub: Any, method: str, agency: Any, request: Any
) -> tuple[int, bytes, str | None]:
    """(status, JSON body, listing id) of a request the dispatcher answers; raises what the
    documented handler would raise."""
    if method == "register":  # POST /v1/listings (`hub.api.listings`'s create)
        require_scope(agency, "publish")
        result, created = await hub.listings.register(agency, request)
        return 201 if created else 200, _encoder.encode(result), result.listing_id
    require_scope(agency, "check")  # a single check without min_position is answered inline
    return 200, _encoder.encode(await getattr(hub.checks, method)(agency, request)), None


def _decoded(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """The request in `body`, or None when it does not decode or holds NUL (the normal route
    refuses NUL with the field named)."""
    if b"\\u0000" in body:
        return None
    try:
        return decoder.decode(body)
    except msgspec.DecodeError:
        return None
