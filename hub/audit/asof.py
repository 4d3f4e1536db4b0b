"""Point-in-time answers: a subject or a whole list as of an effective time, as known at a
recorded time (a log position or an instant). See docs/AUDIT.md for the semantics.

`as_of` and `known_at` instants are RFC 3339 with an offset; a `+` left unencoded in a query
string arrives as a space and is read back as `+`. `known_at` made only of digits is a log
position.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from hub.errors import InputError
from projections.history import KnownAt, list_as_of, subject_timelines
from projections.history_timeline import Timeline
from schemas.audit import ListAsOf, ListingAsOf
from schemas.listing import ListingSummary, SubjectProfile

_SPACED_OFFSET = re.compile(r" (\d{2}(:?\d{2})?)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)

if TYPE_CHECKING:
    from hub.bootstrap import Hub


def parse_instant(text: str, field: str) -> datetime:
    value = _SPACED_OFFSET.sub(r"+\1", text.strip())
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"{field} is not an RFC 3339 time: {text[:60]!r}", field=field) from None
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise InputError(f"{field} needs a UTC offset (Z or +08:00)", field=field)
    return instant.astimezone(UTC)


def parse_known_at(text: str | None) -> KnownAt | None:
    if text is None or not text.strip():
        return None
    if text.strip().isdigit():
        return KnownAt(position=int(text.strip()))
    return KnownAt(time=parse_instant(text, "known_at"))


def _summary(timeline: Timeline, at: datetime, status: str) -> ListingSummary:
    terms = timeline.terms_at(at)
    return ListingSummary(
        listing_id=timeline.listing_id,
        list=terms["list"],
        domain=terms["domain"],
        severity=terms["severity"],
        intent=terms["intent"],
        region=terms["region"],
        authority=terms["authority"],
        decision_no=terms["decision_no"],
        status=status,
        effective_from=terms["effective_from"],
        effective_until=terms["effective_until"],
        position=timeline.position,
    )


async def subject_as_of(
    hub: Hub, subject_id: str, as_of: str | None, known_at: str | None
) -> SubjectProfile:
    """The subject's listings in force (and pending) at `as_of`, as the log knew at `known_at`."""
    at = parse_instant(as_of, "as_of") if as_of else hub.clock.now()
    known = parse_known_at(known_at)
    async with hub.pool.acquire() as conn:
        timelines = await subject_timelines(conn, subject_id, known)
    active: list[ListingSummary] = []
    pending: list[ListingSummary] = []
    for timeline in timelines:
        status = timeline.status_at(at)
        if status == "effective":
            active.append(_summary(timeline, at, status))
        elif status in ("noticed", "objected"):
            pending.append(_summary(timeline, at, status))
    active.sort(key=lambda s: (s.effective_from, s.listing_id))
    pending.sort(key=lambda s: (s.effective_from, s.listing_id))
    names = sorted({t.terms_at(at)["subject_name"] for t in timelines if t.status_at(at)})
    return SubjectProfile(subject_id, names, active, pending, at)


def _cursor(valid_from: datetime, listing_id: UUID) -> str:
    return f"{(valid_from - _EPOCH) // _MICRO}_{listing_id.hex}"


def _parse_cursor(text: str) -> tuple[datetime, UUID]:
    try:
        micros, _, hex_id = text.partition("_")
        return _EPOCH + int(micros) * _MICRO, UUID(hex=hex_id)
    except ValueError:
        raise InputError("after is not a cursor this endpoint returned", field="after") from None


async def list_at(
    hub: Hub,
    list_name: str,
    *,
    as_of: str | None,
    known_at: str | None,
    after: str | None,
    limit: int,
) -> ListAsOf:
    at = parse_instant(as_of, "as_of") if as_of else hub.clock.now()
    known = parse_known_at(known_at)
    cursor = _parse_cursor(after) if after else None
    async with hub.pool.acquire() as conn:
        rows = await list_as_of(conn, list_name, at, known, after=cursor, limit=limit)
    listings = [
        ListingAsOf(
            listing_id=str(r["listing_id"]),
            subject_id=r["subject_id"],
            subject_name=r["subject_name"],
            list=r["list"],
            domain=r["domain"],
            severity=r["severity"],
            intent=r["intent"],
            region=r["region"],
            authority=r["authority"],
            decision_no=r["decision_no"],
            effective_from=r["effective_from"],
            effective_until=r["effective_until"],
            valid_from=r["valid_from"],
            valid_to=r["valid_to"],
            recorded_position=r["recorded_from_position"],
        )
        for r in rows
    ]
    last = rows[-1] if len(rows) == limit else None
    return ListAsOf(
        list=list_name,
        as_of=at,
        known_at_position=known.position if known else None,
        known_at_time=known.time if known else None,
        listings=listings,
        next_after=_cursor(last["valid_from"], last["listing_id"]) if last else None,
    )
