"""Credit repair routes: apply, the authority's four decisions, a case with its deadlines;
and `GET /v1/overdue`, the caller's answers and decisions past their working-day limits.

Who applies: the subject applies through an agency's system (the credit website's, a service
hall's), so any key with the `publish` scope may file a case; only the listing's authority
decides on it.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from litestar import Controller, Response, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from hub.agencies import require_scope
from hub.api.commitments import side
from hub.api.deps import AgencyDep, HubDep
from hub.errors import InputError
from hub.subject.deadlines import overdue as overdue_query
from schemas.subject import NewRepair, OverdueSummary, RepairCreated, RepairDecision, RepairView


def _repair_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise InputError(f"{value!r} is not a repair id (a UUID)", field="repair_id") from None


class RepairController(Controller):
    path = "/v1/repairs"
    tags = ["repairs"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post("/", status_code=201, summary="Apply for credit repair of a listing")
    async def create(
        self, data: JSONBody[NewRepair], agency: AgencyDep, hub: HubDep
    ) -> Response[RepairCreated]:
        require_scope(agency, "publish")
        result, created = await side(hub).repairs.apply(agency, data)
        return Response(result, status_code=201 if created else 200)

    @get("/{repair_id:str}", summary="A repair case, its deadlines and overdue flags")
    async def read(self, repair_id: FromPath[str], agency: AgencyDep, hub: HubDep) -> RepairView:
        require_scope(agency, "publish", "audit")
        return await side(hub).repairs.get(agency, _repair_id(repair_id))

    async def _decide(
        self, repair_id: str, action: str, data: RepairDecision, agency: AgencyDep, hub: HubDep
    ) -> RepairView:
        require_scope(agency, "publish")
        return await side(hub).repairs.decide(agency, _repair_id(repair_id), action, data.reason)

    @post("/{repair_id:str}/accept", status_code=200, summary="The application is complete")
    async def accept(
        self,
        repair_id: FromPath[str],
        data: JSONBody[RepairDecision],
        agency: AgencyDep,
        hub: HubDep,
    ) -> RepairView:
        return await self._decide(repair_id, "accept", data, agency, hub)

    @post("/{repair_id:str}/reject", status_code=200, summary="The application is incomplete")
    async def reject(
        self,
        repair_id: FromPath[str],
        data: JSONBody[RepairDecision],
        agency: AgencyDep,
        hub: HubDep,
    ) -> RepairView:
        return await self._decide(repair_id, "reject", data, agency, hub)

    @post("/{repair_id:str}/approve", status_code=200, summary="Repair: the listing is delisted")
    async def approve(
        self,
        repair_id: FromPath[str],
        data: JSONBody[RepairDecision],
        agency: AgencyDep,
        hub: HubDep,
    ) -> RepairView:
        return await self._decide(repair_id, "approve", data, agency, hub)

    @post("/{repair_id:str}/deny", status_code=200, summary="Repair denied, with the reason")
    async def deny(
        self,
        repair_id: FromPath[str],
        data: JSONBody[RepairDecision],
        agency: AgencyDep,
        hub: HubDep,
    ) -> RepairView:
        return await self._decide(repair_id, "deny", data, agency, hub)


@get("/v1/overdue", tags=["deadlines"], summary="Answers and decisions past their limit")
async def overdue(
    agency: AgencyDep,
    hub: HubDep,
    limit: Annotated[int, QueryParameter(ge=0, le=1000)] = 100,
) -> OverdueSummary:
    """The caller's overdue objection answers, repair decisions and report answers; an
    auditor (`audit` scope) sees every agency's."""
    require_scope(agency, "publish", "audit")
    whose = None if "audit" in agency.scopes and "publish" not in agency.scopes else agency.code
    async with hub.pool.acquire() as conn:
        return await overdue_query(conn, whose, hub.clock.now(), limit=limit)
