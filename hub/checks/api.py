"""HTTP routes of checks, feedback, statistics and the measure catalogue.

`POST /v1/checks` is answered by the route middleware in `hub.checks.fastpath`; the handler
here documents it in the OpenAPI schema and answers whatever the fast path hands over.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Response, get, post, put
from litestar.params import FromPath, JSONBody, QueryParameter

from hub.agencies import require_scope
from hub.api.deps import AgencyDep, HubDep
from hub.bootstrap import Hub
from hub.checks.fastpath import fast_batch, fast_check
from hub.checks.records import add_feedback, read_record, stats
from hub.checks.service import CheckService
from hub.errors import Unavailable
from schemas.catalogue import CatalogueView, MeasureBody, MeasurePutResult
from schemas.checks import (
    BatchAnswer,
    BatchRequest,
    CheckAnswer,
    CheckRecord,
    CheckRequest,
    Feedback,
    NewFeedback,
    Stats,
)

ANY_SCOPE = ("publish", "check", "audit", "subscribe", "admin")


def _checks(hub: Hub) -> CheckService:
    if hub.checks is None:
        raise Unavailable("checks are not served by this process", retry_after=5)
    return hub.checks


@post(
    "/v1/checks",
    status_code=200,
    tags=["checks"],
    summary="Check a subject for a matter: the decision and the measures that apply",
    description=(
        "Answers from the in-memory index of listings in force and the measure catalogue; the "
        "answer is recorded in the usage log before it is sent. `min_position` waits up to 1 s "
        "for the index to reach a log position (503 with Retry-After otherwise)."
    ),
    middleware=[fast_check],
)
async def post_check(data: JSONBody[CheckRequest], agency: AgencyDep, hub: HubDep) -> CheckAnswer:
    require_scope(agency, "check")
    return await _checks(hub).check(agency, data)


@post(
    "/v1/checks/batch",
    status_code=200,
    tags=["checks"],
    summary="Check up to 10,000 subjects at once; each result equals a single check's",
    middleware=[fast_batch],
)
async def post_batch(data: JSONBody[BatchRequest], agency: AgencyDep, hub: HubDep) -> BatchAnswer:
    require_scope(agency, "check")
    return await _checks(hub).batch(agency, data)


@get("/v1/checks/{check_id:str}", tags=["checks"], summary="The record of one check")
async def get_check(check_id: FromPath[str], agency: AgencyDep, hub: HubDep) -> CheckRecord:
    require_scope(agency, "check", "audit", "admin")
    return await read_record(hub.pool, agency, check_id)


@post(
    "/v1/checks/{check_id:str}/feedback",
    status_code=201,
    tags=["checks"],
    summary="Report whether a measure the check returned was applied (反馈)",
)
async def post_feedback(
    check_id: FromPath[str], data: JSONBody[NewFeedback], agency: AgencyDep, hub: HubDep
) -> Response[Feedback]:
    require_scope(agency, "check")
    service = _checks(hub)
    feedback, created = await add_feedback(
        hub.pool, service.usage.shard, agency, check_id, data, now=hub.clock.now()
    )
    return Response(feedback, status_code=201 if created else 200)


@get("/v1/stats", tags=["checks"], summary="Counts of listings, checks, hits and applied measures")
async def get_stats(
    agency: AgencyDep,
    hub: HubDep,
    min_position: Annotated[int | None, QueryParameter(ge=0)] = None,
) -> Stats:
    require_scope(agency, "audit", "admin")
    if min_position is not None:
        await hub.require_position(min_position, 2.0)
    return await stats(hub.pool, hub.clock.now())


@get("/v1/measures", tags=["measures"], summary="The measure catalogue with its version")
async def get_measures(agency: AgencyDep, hub: HubDep) -> CatalogueView:
    require_scope(agency, *ANY_SCOPE)
    return await _checks(hub).catalogue.view()


@put(
    "/v1/measures/{code:str}",
    status_code=200,
    tags=["measures"],
    summary="Create or replace a measure (a catalogue event)",
)
async def put_measure(
    code: FromPath[str], data: JSONBody[MeasureBody], agency: AgencyDep, hub: HubDep
) -> MeasurePutResult:
    require_scope(agency, "admin")
    return await _checks(hub).catalogue.put(code, data)


ROUTES = [post_check, post_batch, get_check, post_feedback, get_stats, get_measures, put_measure]
