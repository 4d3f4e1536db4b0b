"""Audit routes: the signed tree head, the log's public key, inclusion and consistency proofs.

Every route needs the `audit` scope. Hashes are lowercase hex; entries are base64 of the
canonical bytes that `schemas.audit.entry_bytes` defines.
"""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.params import FromPath, QueryParameter

from hub.agencies import require_scope
from hub.api.deps import AgencyDep, HubDep
from hub.audit import AuditLog
from hub.audit.asof import list_at
from hub.audit.replay import replay_check
from hub.bootstrap import Hub
from hub.errors import InputError, Unavailable
from schemas.audit import (
    CheckReplay,
    ConsistencyProof,
    InclusionProof,
    ListAsOf,
    PublicKey,
    TreeHead,
)
from schemas.listing import INCENTIVE_LISTS, PUNITIVE_LISTS

TAGS = ["audit"]


def _audit(hub: Hub) -> AuditLog:
    audit: AuditLog | None = getattr(hub, "audit", None)
    if audit is None:
        raise Unavailable("the audit log is not running in this process", retry_after=5)
    return audit


def _required(value: int | None, name: str) -> int:
    if value is None:
        raise InputError(f"the query parameter {name} is required", field=name)
    return value


@get("/v1/audit/tree-head", tags=TAGS, summary="The latest signed tree head (a C2SP checkpoint)")
async def tree_head(agency: AgencyDep, hub: HubDep) -> TreeHead:
    require_scope(agency, "audit")
    return await _audit(hub).tree_head()


@get("/v1/audit/public-key", tags=TAGS, summary="The log's origin and note verifier key")
async def public_key(agency: AgencyDep, hub: HubDep) -> PublicKey:
    require_scope(agency, "audit")
    return _audit(hub).public_key()


@get(
    "/v1/audit/proof/inclusion",
    tags=TAGS,
    summary="Proof that the event at a log position is in the tree of a given size",
)
async def inclusion_proof(
    agency: AgencyDep,
    hub: HubDep,
    position: Annotated[
        int | None, QueryParameter(ge=1, description="the event's log position (required)")
    ] = None,
    tree_size: Annotated[
        int | None, QueryParameter(ge=1, description="default: the latest signed tree head")
    ] = None,
) -> InclusionProof:
    require_scope(agency, "audit")
    return await _audit(hub).inclusion(_required(position, "position"), tree_size)


@get(
    "/v1/audit/proof/consistency",
    tags=TAGS,
    summary="Proof that the tree of size `second` extends the tree of size `first`",
)
async def consistency_proof(
    agency: AgencyDep,
    hub: HubDep,
    first: Annotated[int | None, QueryParameter(ge=1, description="(required)")] = None,
    second: Annotated[int | None, QueryParameter(ge=1, description="(required)")] = None,
) -> ConsistencyProof:
    require_scope(agency, "audit")
    return await _audit(hub).consistency(_required(first, "first"), _required(second, "second"))


@get(
    "/v1/lists/{list_name:str}",
    tags=["subjects"],
    summary="The listings in force on a list at an effective time, as known at a recorded time",
)
async def list_as_of(
    list_name: FromPath[str],
    agency: AgencyDep,
    hub: HubDep,
    *,
    as_of: Annotated[
        str | None, QueryParameter(description="effective time, RFC 3339 (default: now)")
    ] = None,
    known_at: Annotated[
        str | None,
        QueryParameter(description="recorded time: RFC 3339, or a log position (default: now)"),
    ] = None,
    after: Annotated[
        str | None, QueryParameter(description="the previous page's next_after")
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    min_position: Annotated[
        int | None, QueryParameter(ge=0, description="wait until the history reached it")
    ] = None,
) -> ListAsOf:
    require_scope(agency, "audit", "subscribe")
    if list_name not in PUNITIVE_LISTS | INCENTIVE_LISTS:
        raise InputError(
            f"unknown list {list_name!r}; lists are {sorted(PUNITIVE_LISTS | INCENTIVE_LISTS)}",
            field="list_name",
        )
    if min_position is not None:
        await hub.require_position(min_position, 2.0, ("history",))
    return await list_at(hub, list_name, as_of=as_of, known_at=known_at, after=after, limit=limit)


@get(
    "/v1/checks/{check_id:str}/replay",
    tags=["checks", "audit"],
    summary="Re-derive a check's answer from the log and compare it with the recorded one",
)
async def check_replay(check_id: FromPath[str], agency: AgencyDep, hub: HubDep) -> CheckReplay:
    require_scope(agency, "audit", "check", "admin")
    return await replay_check(hub, agency, check_id)


ROUTES = [tree_head, public_key, inclusion_proof, consistency_proof, list_as_of, check_replay]
