"""Listing routes: register, read, object, resolve, amend, delist; and the subject view."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import FromPath, JSONBody, QueryParameter

from hub.agencies import require_scope
from hub.api.deps import AgencyDep, HubDep
from hub.api.fastlisting import fast_create
from hub.bootstrap import Hub
from hub.credit.domainmodel import Listing
from hub.credit.service import parse_listing_id
from hub.errors import InputError, NotFound
from projections.listings import subject_listings
from schemas.identifiers import IdentifierError, parse_subject_id
from schemas.listing import (
    Amendment,
    Basis,
    CommandResult,
    Delisting,
    ListingDetail,
    ListingSummary,
    ListingView,
    NewListing,
    NewObjection,
    Objection,
    ObjectionAnswer,
    SubjectProfile,
    SubjectRef,
)
from schemas.log import RawEvent, to_log_event

SUMMARY_FIELDS = tuple(f for f in ListingSummary.__struct_fields__ if f != "listing_id")


def _view(listing: Listing, hub: Hub) -> ListingView:
    now = hub.clock.now()
    return ListingView(
        listing_id=str(listing.id),
        status=listing.status_at(now),  # type: ignore[arg-type]
        subject=SubjectRef(listing.subject_id, listing.subject_name),
        list=listing.list,  # type: ignore[arg-type]
        domain=listing.domain,
        severity=listing.severity,  # type: ignore[arg-type]
        intent=listing.intent,  # type: ignore[arg-type]
        basis=Basis(listing.decision_no, listing.legal_basis, listing.facts),
        region=listing.region,
        authority=listing.authority,
        effective_from=listing.effective_from,
        effective_until=listing.effective_until,
        notice_until=listing.notice_until,
        recorded_at=listing.created_on,
        delist_reason=listing.delist_reason,  # type: ignore[arg-type]
        delisted_at=listing.delisted_at,
        objections=[msgspec.convert(o, Objection) for o in listing.objections],
        version=listing.version,
    )


class ListingController(Controller):
    path = "/v1/listings"
    tags = ["listings"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/",
        status_code=201,
        summary="Put a subject on a list (idempotent per decision)",
        middleware=[fast_create],
    )
    async def create(
        self, data: JSONBody[NewListing], agency: AgencyDep, hub: HubDep
    ) -> Response[CommandResult]:
        require_scope(agency, "publish")
        result, created = await hub.listings.register(agency, data)
        return Response(result, status_code=201 if created else 200)

    @get("/{listing_id:str}", summary="A listing's current state and its full history")
    async def read(
        self, listing_id: FromPath[str], agency: AgencyDep, hub: HubDep
    ) -> ListingDetail:
        require_scope(agency, "publish", "check", "audit", "subscribe")
        uid = parse_listing_id(listing_id)
        async with hub.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM credit_events WHERE originator_id = $1 ORDER BY originator_version",
                uid,
            )
        if not rows:
            raise NotFound(f"listing {listing_id} does not exist", field="listing_id")
        raws = [RawEvent(r[0], r[1], r[2], r[3], r[4]) for r in rows]
        aggregate: Any = None
        for raw in raws:
            event: Any = hub.app.mapper.to_domain_event(_stored(raw))
            aggregate = event.mutate(aggregate)
        if not isinstance(aggregate, Listing):
            raise NotFound(f"{listing_id} is not a listing", field="listing_id")
        return ListingDetail(_view(aggregate, hub), [to_log_event(r) for r in raws])

    @post("/{listing_id:str}/objections", status_code=201, summary="Record an objection")
    async def object(
        self,
        listing_id: FromPath[str],
        data: JSONBody[NewObjection],
        agency: AgencyDep,
        hub: HubDep,
    ) -> CommandResult:
        require_scope(agency, "publish")
        return await hub.listings.object(agency, parse_listing_id(listing_id), data)

    @post(
        "/{listing_id:str}/objections/{n:int}/resolve",
        status_code=200,
        summary="Answer an objection; an upheld objection ends the listing",
    )
    async def resolve(
        self,
        listing_id: FromPath[str],
        n: FromPath[int],
        data: JSONBody[ObjectionAnswer],
        agency: AgencyDep,
        hub: HubDep,
    ) -> CommandResult:
        require_scope(agency, "publish")
        return await hub.listings.resolve(agency, parse_listing_id(listing_id), n, data)

    @post("/{listing_id:str}/amend", status_code=200, summary="Amend a listing's terms")
    async def amend(
        self, listing_id: FromPath[str], data: JSONBody[Amendment], agency: AgencyDep, hub: HubDep
    ) -> CommandResult:
        require_scope(agency, "publish")
        return await hub.listings.amend(agency, parse_listing_id(listing_id), data)

    @post("/{listing_id:str}/delist", status_code=200, summary="Take a listing off its list")
    async def delist(
        self, listing_id: FromPath[str], data: JSONBody[Delisting], agency: AgencyDep, hub: HubDep
    ) -> CommandResult:
        require_scope(agency, "publish")
        return await hub.listings.delist(agency, parse_listing_id(listing_id), data)


def _stored(raw: RawEvent) -> Any:
    from eventsourcing.persistence import StoredEvent  # noqa: PLC0415 - keep routes light

    return StoredEvent(raw.originator_id, raw.version, raw.topic, raw.state)


def _summary(row: Any) -> ListingSummary:
    return ListingSummary(listing_id=str(row["listing_id"]), **{f: row[f] for f in SUMMARY_FIELDS})


@get(
    "/v1/subjects/{subject_id:str}",
    tags=["subjects"],
    summary="A subject and its listings in force (and those still in their notice window)",
)
async def subject_profile(
    subject_id: FromPath[str],
    agency: AgencyDep,
    hub: HubDep,
    min_position: Annotated[int | None, QueryParameter(ge=0)] = None,
    *,
    as_of: Annotated[
        str | None, QueryParameter(description="effective time, RFC 3339 (docs/AUDIT.md)")
    ] = None,
    known_at: Annotated[
        str | None, QueryParameter(description="recorded time: RFC 3339 or a log position")
    ] = None,
) -> SubjectProfile:
    require_scope(agency, "publish", "check", "audit", "subscribe")
    try:
        subject = str(parse_subject_id(subject_id, field="subject_id"))
    except IdentifierError as exc:
        raise InputError(str(exc), field=exc.field) from None
    if min_position is not None:
        await hub.require_position(min_position, 2.0, ("listings",))
    if as_of is not None or known_at is not None:
        from hub.audit.asof import subject_as_of  # noqa: PLC0415 - the audit timelines

        return await subject_as_of(hub, subject, as_of, known_at)
    now = hub.clock.now()
    async with hub.pool.acquire() as conn:
        active, pending = await subject_listings(conn, subject, now)
    names = sorted({r["subject_name"] for r in active + pending})
    return SubjectProfile(
        subject, names, [_summary(r) for r in active], [_summary(r) for r in pending], now
    )


__all__ = ["ListingController", "subject_profile"]
