"""The listings read model: one row per listing with its current state, by subject, list,
domain, region and authority; and the queries the API asks of it.

A listing is *in force* at `now` when it is effective (or noticed with its window over and
no objection pending), has started, and has not expired: expiry counts from the instant
`effective_until` passes, before any `expired` event says so.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

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
CREATE INDEX IF NOT EXISTS listings_list_status ON listings (list, status);
CREATE INDEX IF NOT EXISTS listings_authority ON listings (authority);
CREATE INDEX IF NOT EXISTS listings_region ON listings (region);
CREATE INDEX IF NOT EXISTS listings_domain ON listings (domain);
"""

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


_record = operator.itemgetter(*COLUMNS)
"""A row as a tuple in `COLUMNS` order."""


def _apply(row: dict[str, Any], event: RawEvent, payload: ev.EventPayload) -> None:
    match payload:
        case ev.ListingObjected():
            row["status"] = "objected"
            row["pending_objections"] += 1
        case ev.ListingObjectionResolved():
            row["pending_objections"] = max(0, row["pending_objections"] - 1)
            if row["pending_objections"] == 0 and row["status"] == "objected":
                row["status"] = "noticed"
        case ev.ListingTookEffect():
            row["status"] = "effective"
        case ev.ListingAmended():
            for key, value in payload.changes.items():
                if key in row:
                    row[key] = value
        case ev.ListingDelisted():
            row["status"] = "delisted"
            row["delist_reason"] = payload.reason
            row["delisted_at"] = payload.effective_at
        case _:
            return
    row["position"] = event.position


def _new_row(event: RawEvent, p: ev.ListingRegistered) -> dict[str, Any]:
    return {
        "listing_id": event.originator_id,
        "subject_id": p.subject_id,
        "subject_name": p.subject_name,
        "list": p.list,
        "domain": p.domain,
        "severity": p.severity,
        "intent": p.intent,
        "region": p.region,
        "authority": p.authority,
        "decision_no": p.decision_no,
        "effective_from": p.effective_from,
        "effective_until": p.effective_until,
        "notice_until": p.notice_until,
        "status": "noticed" if p.notice_until is not None else "effective",
        "pending_objections": 0,
        "delist_reason": None,
        "delisted_at": None,
        "recorded_at": p.timestamp,
        "position": event.position,
    }


class ListingsProjection:
    name = "listings"

    async def setup(self, conn: Connection) -> None:
        await conn.execute(DDL)

    async def reset(self, conn: Connection) -> None:
        await conn.execute("TRUNCATE listings")

    async def apply(self, conn: Connection, events: Sequence[RawEvent]) -> None:
        decoded = [
            (event, ev.decode_payload(event.topic, event.state))
            for event in events
            if event.topic in ev.EVENT_TYPES and event.topic.startswith(ev.LISTING_TOPIC)
        ]
        if not decoded:
            return
        rows: dict[UUID, dict[str, Any]] = {}
        created = {e.originator_id for e, p in decoded if isinstance(p, ev.ListingRegistered)}
        missing = {e.originator_id for e, p in decoded if e.originator_id not in created}
        if missing:
            for record in await conn.fetch(
                f"SELECT {', '.join(COLUMNS)} FROM listings WHERE listing_id = ANY($1::uuid[])",
                list(missing),
            ):
                rows[record["listing_id"]] = dict(record)
        for event, payload in decoded:
            if isinstance(payload, ev.ListingRegistered):
                rows[event.originator_id] = _new_row(event, payload)
            elif event.originator_id in rows:
                _apply(rows[event.originator_id], event, payload)
        new = [_record(r) for key, r in rows.items() if key in created]
        changed = [_record(r) for key, r in rows.items() if key not in created]
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
