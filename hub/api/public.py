"""Keyless public routes: a subject's public record, the search by name, and public reports.

Every route is rate-limited per client address (a token bucket in this process, 429 with
Retry-After); report bodies are capped at 8 KiB.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from hub.api.commitments import side
from hub.api.deps import HubDep
from hub.errors import InputError
from schemas.identifiers import IdentifierError, mask_subject_id, parse_subject_id
from schemas.subject import NewReport, PublicSearchPage, PublicSubject, ReportReceipt

REPORT_MAX_BYTES = 8 * 1024


def client_of(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


@get(
    "/public/subjects/{subject_id:str}",
    tags=["public"],
    summary="What may be published about a subject (identity numbers masked)",
)
async def public_subject(
    subject_id: FromPath[str], request: Request[Any, Any, Any], hub: HubDep
) -> PublicSubject:
    subject = side(hub)
    subject.public_limit.check(client_of(request), "requests")
    try:
        parsed = str(parse_subject_id(subject_id, field="subject_id"))
    except IdentifierError as exc:
        raise InputError(str(exc), field=exc.field) from None
    now = hub.clock.now()
    async with hub.pool.acquire() as conn:
        found = await subject.public.subjects(conn, [parsed], now)
    empty = PublicSubject(
        subject_id=mask_subject_id(parsed), names=[], listings=[], commitments=[], as_of=now
    )
    return found.get(parsed, empty)


@get("/public/search", tags=["public"], summary="Search published subjects by name")
async def public_search(
    request: Request[Any, Any, Any],
    hub: HubDep,
    name: Annotated[str, QueryParameter(min_length=1, max_length=100)],
    limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, QueryParameter(max_length=400)] = None,
) -> PublicSearchPage:
    subject = side(hub)
    subject.public_limit.check(client_of(request), "requests")
    async with hub.pool.acquire() as conn:
        page, after = await subject.public.search(
            conn, name, hub.clock.now(), limit=limit, cursor=cursor
        )
    return PublicSearchPage(page, after)


@post(
    "/public/reports",
    status_code=201,
    tags=["public"],
    summary="Report a wrong listing or a measure applied wrongly or not at all",
    request_max_body_size=REPORT_MAX_BYTES,
)
async def public_report(
    data: JSONBody[NewReport], request: Request[Any, Any, Any], hub: HubDep
) -> ReportReceipt:
    subject = side(hub)
    subject.report_limit.check(client_of(request), "reports")
    return await subject.reports.file(data)
