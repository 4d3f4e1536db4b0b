"""The listings read model: one row per listing with its current state, by subject, list,
domain, region and authority; and the queries the API asks of it.

A listing is *in force* at `now` when it is effective (or noticed with its window over and
no objection pending), has started, and has not expired: expiry counts from the instant
`effective_until` passes, before any `expired` event says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from projections._runner import Connection
from schemas import events as ev
from schemas.log import RawEvent

COLUMNS = (
    "listing_id",
    "subject_id",
    "subject_name",
    "list",
    "domain",
    "severity",
    "intent",
    "region",
    "authority",
    "decision_no",
    "effective_from",
    "effective_until",
    "notice_until",
    "status",
    "pending_objections",
    "delist_reason",
    "delisted_at",
    "recorded_at",
    "position",
)

DDL = """
CREATE TABLE IF NOT EXISTS listings (
    listing_id uuid PRIMARY KEY,
    subject_id text NOT NULL,
    subject_name text NOT NULL,
    list text NOT NULL,
    domain text NOT NULL,
    severity text,
    intent text,
    region text NOT NULL,
    authority text NOT NULL,
    decision_no text NOT NULL,
    effective_from timestamptz NOT NULL,
    effective_until timestamptz,
    notice_until timestamptz,
    status text NOT NULL,
    pending_objections integer NOT NULL DEFAULT 0,
    delist_reason text,
    delisted_at timestamptz,
    recorded_at timestamptz NOT NULL,
    position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS listings_subject ON listings (subject_id);
DROP INDEX IF EXISTS listings_list_status, listings_authority, listings_region, listings_domain;
"""
"""Indexes serve the queries asked of the table: by id, by subject (profiles, public records,
history, audit) and the scheduler's due listings (`hub.scheduler` adds those). No query
narrows by list, status, authority, region or domain alone: the statistics, the check
index and the export read the listings in force (the scheduler's partial index on
`effective_until`, or a scan), so the indexes on those few-valued columns that earlier
versions made (dropped here) went unused, and cost half the index builds of a rebuild
(`hub replay listings`) besides every write."""

IN_FORCE = """
    (status = 'effective'
     OR (status = 'noticed' AND notice_until <= $2 AND pending_objections = 0))
    AND effective_from <= $2 AND (effective_until IS NULL OR effective_until > $2)
"""

_UPSERT = (
    f"INSERT INTO listings ({', '.join(COLUMNS)}) SELECT {', '.join(COLUMNS)} FROM _listings_stage "
    "ON CONFLICT (listing_id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
)


_INDEX = {column: i for i, column in enumerate(COLUMNS)}
_STATUS = _INDEX["status"]
_PENDING = _INDEX["pending_objections"]
_REASON = _INDEX["delist_reason"]
_DELISTED_AT = _INDEX["delisted_at"]
_POSITION = _INDEX["position"]


class _Registration(msgspec.Struct, gc=False):
    """The fields of `ListingRegistered` a row needs: decoding skips the others (the long
    texts: legal basis, facts, digest), which is most of the cost of a registration."""

    timestamp: datetime
    subject_id: str
    subject_name: str
    list: str
    domain: str
    severity: str | None
    intent: str | None
    decision_no: str
    region: str
    authority: str
    effective_from: datetime
    effective_until: datetime | None
    notice_until: datetime | None


_decode_registration = msgspec.msgpack.Decoder(_Registration).decode

_LISTING_TOPICS = {
    topic: kind.payload
    for topic, kind in ev.EVENT_TYPES.items()
    if topic.startswith(ev.LISTING_TOPIC)
}
_REGISTRATIONS = frozenset(
    t for t, payload in _LISTING_TOPICS.items() if issubclass(payload, ev.ListingRegistered)
)
"""Registration topics: decoded with `_Registration`; other listing topics in full."""


def _apply(row: list[Any], position: int, payload: ev.EventPayload) -> None:
    """Apply one event (at `position` in the log) to a row (a list in `COLUMNS` order)."""
    match payload:
        case ev.ListingObjected():
            row[_STATUS] = "objected"
            row[_PENDING] += 1
        case ev.ListingObjectionResolved():
            row[_PENDING] = max(0, row[_PENDING] - 1)
            if row[_PENDING] == 0 and row[_STATUS] == "objected":
                row[_STATUS] = "noticed"
        case ev.ListingTookEffect():
            row[_STATUS] = "effective"
        case ev.ListingAmended():
            for key, value in payload.changes.items():
                index = _INDEX.get(key)
                if index is not None:
                    row[index] = value
        case ev.ListingDelisted():
            row[_STATUS] = "delisted"
            row[_REASON] = payload.reason
            row[_DELISTED_AT] = payload.effective_at
        case _:
            return
    row[_POSITION] = position


def _new_row(listing_id: UUID, position: int, p: _Registration) -> tuple[Any, ...]:
    """A registration's row, in `COLUMNS` order (a tuple: the garbage collector stops tracking
    it; a later event of the batch copies it into a list)."""
    return (
        listing_id,
        p.subject_id,
        p.subject_name,
        p.list,
        p.domain,
        p.severity,
        p.intent,
        p.region,
        p.authority,
        p.decision_no,
        p.effective_from,
        p.effective_until,
        p.notice_until,
        "noticed" if p.notice_until is not None else "effective",
        0,
        None,
        None,
        p.timestamp,
        position,
    )


_Decoded = tuple[list[tuple[RawEvent, Any]], set[UUID]]
"""(event, payload) pairs and the ids registered in the batch."""


def _decode(events: Sequence[RawEvent]) -> _Decoded:
    """(event, payload) of the listing events, in order, a registration's payload being its new
    row (a tuple); and the ids registered among them."""
    decoded: list[tuple[RawEvent, Any]] = []
    created: set[UUID] = set()
    for event in events:
        topic = event.topic
        if topic in _REGISTRATIONS:
            row = _new_row(event.originator_id, event.position, _decode_registration(event.state))
            decoded.append((event, row))
            created.add(event.originator_id)
        elif topic in _LISTING_TOPICS:
            decoded.append((event, ev.decode_payload(topic, event.state)))
    return decoded, created


def _fold(decoded: list[tuple[RawEvent, Any]], rows: dict[UUID, Sequence[Any]]) -> None:
    """Apply the batch, in order, to `rows` (the stored rows it changes, by id)."""
    for event, payload in decoded:
        if type(payload) is tuple:  # a registration's new row
            rows[event.originator_id] = payload
            continue
        row = rows.get(event.originator_id)
        if row is None:
            continue
        if not isinstance(row, list):
            row = rows[event.originator_id] = list(row)
        _apply(row, event.position, payload)


class ListingsProjection:
    name = "listings"

    async def setup(self, conn: Connection) -> None:
        await conn.execute(DDL)

    async def reset(self, conn: Connection) -> None:
        await conn.execute("TRUNCATE listings")

    async def apply(self, conn: Connection, events: Sequence[RawEvent]) -> None:
        decoded, created = _decode(events)
        if not decoded:
            return
        rows: dict[UUID, Sequence[Any]] = {}
        missing = {e.originator_id for e, _ in decoded if e.originator_id not in created}
        if missing:
            for record in await conn.fetch(
                f"SELECT {', '.join(COLUMNS)} FROM listings WHERE listing_id = ANY($1::uuid[])",
                list(missing),
            ):
                rows[record[0]] = list(record)
        _fold(decoded, rows)
        new = [r for key, r in rows.items() if key in created]
        changed = [r for key, r in rows.items() if key not in created]
        if new:
            try:  # rows registered in this batch are new: plain COPY, no staging, no conflict
                async with conn.transaction():
                    await conn.copy_records_to_table("listings", records=new, columns=COLUMNS)
            except asyncpg.UniqueViolationError:  # a registration applied before: overwrite
                changed += new
        if changed:
            await conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _listings_stage "
                "(LIKE listings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            await conn.copy_records_to_table("_listings_stage", records=changed, columns=COLUMNS)
            await conn.execute(_UPSERT)


async def subject_listings(
    conn: Connection, subject_id: str, now: datetime
) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    """(in force now, noticed or objected and not yet in force) listings of a subject."""
    rows = await conn.fetch(
        f"SELECT *, ({IN_FORCE}) AS in_force FROM listings "
        "WHERE subject_id = $1 AND status <> 'delisted' ORDER BY effective_from",
        subject_id,
        now,
    )
    active = [r for r in rows if r["in_force"]]
    pending = [r for r in rows if not r["in_force"] and r["status"] in ("noticed", "objected")]
    return active, pending
