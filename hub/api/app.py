"""`create_app()`: the Litestar application with its lifespan, routes, OpenAPI at
`/openapi.json` with interactive docs at `/docs`, and one problem+json error mapping."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from litestar import Litestar
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from hub.api.deps import provide_agency, provide_hub
from hub.api.problems import EXCEPTION_HANDLERS
from hub.api.routes import ROUTES
from hub.api.strict import strict_body
from hub.bootstrap import Hub, build_hub
from hub.checks.fastpath import Dispatching
from hub.clock import Clock
from hub.logs import configure_logging
from hub.metrics import REQUEST_SECONDS, REQUESTS
from hub.settings import Settings

log = structlog.get_logger(__name__)


_PROCESS = secrets.token_hex(4)
_sequence = itertools.count(1)
_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def next_request_id() -> str:
    """This process's random prefix and a counter: unique, and no system call per request."""
    return f"{_PROCESS}-{next(_sequence):x}"


def _metrics_for(method: str, route: str, status: int) -> tuple[Any, Any]:
    """Prometheus children per (method, route, status), looked up once, not per request."""
    key = (method, route, status)
    found = _children.get(key)
    if found is None:
        found = (
            REQUESTS.labels(method, route, str(status)),
            REQUEST_SECONDS.labels(method, route),
        )
        _children[key] = found
    return found


def observe(app: ASGIApp) -> ASGIApp:
    """Request id, structured access log and Prometheus metrics for every HTTP request.

    The request id is this process's random prefix and a counter: unique, and no system call
    per request (uuid4 reads the OS's random source each time).
    """

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        request_id = next_request_id()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            handler = scope.get("route_handler")
            route = next(iter(handler.paths), scope["path"]) if handler else "unmatched"
            elapsed = time.perf_counter() - started
            counter, latency = _metrics_for(method, route, status)
            counter.inc()
            latency.observe(elapsed)
            if route not in ("/metrics", "/healthz"):
                log.info(
                    "request",
                    method=method,
                    path=scope["path"],
                    status=status,
                    ms=round(elapsed * 1000, 2),
                )

    return middleware


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> Litestar:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        hub: Hub = await build_hub(settings, clock)
        app.state.hub = hub
        if isinstance(app, Dispatching):
            app.hub = hub  # the check fast path's, read per request
        await hub.start()
        log.info("hub_started", schema=settings.database_schema)
        try:
            yield
        finally:
            await hub.stop()

    configure_logging(settings.log_level)
    dependencies: dict[str, Any] = {
        "hub": Provide(provide_hub, sync_to_thread=False),
        "agency": Provide(provide_agency),
    }
    app = Dispatching(
        route_handlers=ROUTES,
        dependencies=dependencies,
        exception_handlers=EXCEPTION_HANDLERS,
        guards=[strict_body],
        lifespan=[lifespan],
        middleware=[observe],
        openapi_config=OpenAPIConfig(
            title="Joint credit hub",
            version="1",
            description="Exchange hub for joint reward and punishment of credit (联合奖惩).",
            path="/",
            render_plugins=[ScalarRenderPlugin(path="/docs")],
        ),
        debug=False,
    )
    # POST /v1/checks answered ahead of the framework, with observe's id, metrics and log line
    app.answer_checks(request_id=next_request_id, metrics_for=_metrics_for)
    return app
