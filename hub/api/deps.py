"""Request-scoped dependencies: the hub from app state and the authenticated agency."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from hub.api.strict import check_body
from hub.bootstrap import Hub
from hub.credit.service import Agency


def provide_hub(state: State) -> Hub:
    hub: Hub = state.hub
    return hub


async def provide_agency(request: Request[Any, Any, Any], state: State) -> Agency:
    hub: Hub = state.hub
    agency = await hub.agencies.authenticate(request.headers.get("authorization"))
    structlog.contextvars.bind_contextvars(agency=agency.code)
    await check_body(request, request.route_handler)  # after authentication: 401 comes first
    return agency


HubDep = NamedDependency[Hub]
"""Handlers declare `hub: HubDep` to receive the composed hub."""
AgencyDep = NamedDependency[Agency]
"""Handlers declare `agency: AgencyDep` to receive the authenticated caller."""
