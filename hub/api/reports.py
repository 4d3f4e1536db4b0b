"""Report routes for agencies: list the public reports routed to the caller, answer one."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from litestar import get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from hub.agencies import require_scope
from hub.api.commitments import side
from hub.api.deps import AgencyDep, HubDep
from hub.errors import InputError
from hub.subject.report_service import parse_report_id
from schemas.subject import ReportAnswer, ReportPage, ReportView


@get("/v1/reports", tags=["reports"], summary="Public reports routed to the calling agency")
async def list_reports(
    *,
    agency: AgencyDep,
    hub: HubDep,
    after: Annotated[
        str | None, QueryParameter(description="report_id of the last row seen")
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    status: Annotated[Literal["filed", "answered"] | None, QueryParameter()] = None,
    overdue: Annotated[bool | None, QueryParameter()] = None,
) -> ReportPage:
    require_scope(agency, "publish")
    try:
        last = UUID(after) if after else None
    except ValueError:
        raise InputError("after must be a report_id", field="after") from None
    return await side(hub).reports.list_for(
        agency, after=last, limit=limit, status=status, overdue=overdue
    )


@post(
    "/v1/reports/{report_id:str}/answer",
    status_code=200,
    tags=["reports"],
    summary="Answer a public report routed to the caller",
)
async def answer_report(
    report_id: FromPath[str], data: JSONBody[ReportAnswer], agency: AgencyDep, hub: HubDep
) -> ReportView:
    require_scope(agency, "publish")
    return await side(hub).reports.answer(agency, parse_report_id(report_id), data)
