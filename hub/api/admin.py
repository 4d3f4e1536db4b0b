"""Agencies, the log feed, and the operational endpoints."""

from __future__ import annotations

import re
from typing import Annotated

from litestar import Response, get, post
from litestar.params import JSONBody, QueryParameter
from msgspec import Meta, Struct
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hub.agencies import SCOPES, require_scope
from hub.api.deps import AgencyDep, HubDep
from hub.errors import InputError, Unavailable
from projections import read_events
from schemas.log import EventPage, to_log_event

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{1,63}$")


class NewAgency(Struct, forbid_unknown_fields=True):
    code: Annotated[str, Meta(min_length=2, max_length=64, examples=["320000-tax"])]
    name: Annotated[str, Meta(min_length=1, max_length=200)]
    scopes: list[str]
    domains: list[str]


class AgencyKey(Struct):
    code: str
    api_key: str


@post(
    "/v1/agencies", status_code=201, tags=["admin"], summary="Register an agency and issue its key"
)
async def create_agency(data: JSONBody[NewAgency], agency: AgencyDep, hub: HubDep) -> AgencyKey:
    require_scope(agency, "admin")
    if not _CODE.match(data.code):
        raise InputError("code may hold letters, digits, '_', '.', '-'", field="code")
    for i, scope in enumerate(data.scopes):
        if scope not in SCOPES:
            raise InputError(
                f"unknown scope {scope!r}; scopes are {sorted(SCOPES)}", field=f"scopes.{i}"
            )
    domains = hub.listings.rules.domains
    for i, domain in enumerate(data.domains):
        if domain != "*" and domain not in domains:
            raise InputError(f"domain {domain!r} is not in the catalogue", field=f"domains.{i}")
    key = await hub.agencies.create(data.code, data.name, data.scopes, data.domains)
    return AgencyKey(data.code, key)


@get("/v1/events", tags=["log"], summary="The credit log in order, after a position")
async def events(
    agency: AgencyDep,
    hub: HubDep,
    after: Annotated[int, QueryParameter(ge=0)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 100,
) -> EventPage:
    require_scope(agency, "audit", "subscribe")
    async with hub.pool.acquire() as conn:
        raws = await read_events(conn, after, limit)
    page = [to_log_event(r) for r in raws]
    return EventPage(page, page[-1].position if page else after)


@get("/healthz", tags=["ops"], summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["ops"], summary="The database answers")
async def readyz(hub: HubDep) -> dict[str, object]:
    try:
        async with hub.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
    except Exception as exc:
        raise Unavailable(f"the database does not answer: {exc}", retry_after=2) from None
    return {"status": "ready", "projections": {k: r.position for k, r in hub.runners.items()}}


@get("/metrics", tags=["ops"], summary="Prometheus metrics", media_type=CONTENT_TYPE_LATEST)
async def metrics() -> Response[bytes]:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
