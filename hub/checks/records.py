"""Reading the usage log: one check's record, feedback on it, and the statistics.

A check's record is readable by the agency that made it and by keys with the `audit` or
`admin` scope. Feedback (反馈) comes only from the agency that made the check and only on a
measure the check returned; the first feedback on a measure stands (the same again answers
it again, a different one is a conflict). Feedback and its counters commit together.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from hub.checks.usage import READ_GROUPED, grouped, upsert_counts
from hub.credit.service import Agency
from hub.errors import Conflict, Forbidden, InputError, NotFound, RuleViolation
from projections.listings import IN_FORCE
from schemas.checks import CheckRecord, Feedback, Hit, NewFeedback, Stats

_hits = msgspec.msgpack.Decoder(list[Hit])
_items = msgspec.msgpack.Decoder(list[tuple[str, str, str, str, list[Hit]]])
GroupedRecord = tuple[str, datetime, int, int, str, str, str, str, list[Hit]]
"""A single check in a group: agency, checked_at, position, catalogue version, subject,
matter, purpose, decision, hits (`hub.checks.service.CheckService.check` writes it)."""
_grouped = msgspec.msgpack.Decoder(GroupedRecord)
_RECORD = (
    "SELECT check_id, agency, checked_at, position, catalogue_version, items, subject_id, "
    "matter, purpose, decision, detail FROM checks WHERE check_id = $1"
)


def parse_check_id(check_id: str) -> tuple[UUID, int | None]:
    """(row id, item index in a batch or None)."""
    head, sep, tail = check_id.partition(":")
    try:
        row_id = UUID(head)
        index = int(tail) if sep else None
    except ValueError:
        raise InputError(
            f"{check_id!r} is not a check id (a UUID, or '<batch id>:<index>')", field="check_id"
        ) from None
    if index is not None and index < 0:
        raise InputError("a batch item index is not negative", field="check_id")
    return row_id, index


async def fetch_record(conn: Any, check_id: str) -> CheckRecord:
    row_id, index = parse_check_id(check_id)
    place = grouped(row_id) if index is None else None
    batch_id = None
    if place is not None:
        data = await conn.fetchval(READ_GROUPED, *place)
        if data is None:
            raise NotFound(f"check {check_id} does not exist", field="check_id")
        agency, checked_at, position, version, subject, matter, purpose, decision, hits = (
            _grouped.decode(data)
        )
    else:
        row = await conn.fetchrow(_RECORD, row_id)
        if row is None or (index is None) != (row["subject_id"] is not None):
            raise NotFound(f"check {check_id} does not exist", field="check_id")
        agency, checked_at = row["agency"], row["checked_at"]
        position, version = row["position"], row["catalogue_version"]
        if index is None:  # a single check recorded before checks were grouped
            subject, matter, purpose, decision = row[6], row[7], row[8], row[9]
            hits = _hits.decode(row["detail"])
        else:
            items = _items.decode(row["detail"])
            if index >= len(items):
                raise NotFound(f"check {check_id} does not exist", field="check_id")
            subject, matter, purpose, decision, hits = items[index]
            batch_id = str(row_id)
    feedback = [
        Feedback(
            check_id=check_id,
            measure_code=f["measure_code"],
            applied=f["applied"],
            note=f["note"],
            agency=f["agency"],
            recorded_at=f["recorded_at"],
        )
        for f in await conn.fetch(
            "SELECT measure_code, applied, note, agency, recorded_at FROM check_feedback "
            "WHERE check_id = $1 ORDER BY measure_code",
            check_id,
        )
    ]
    return CheckRecord(
        check_id=check_id,
        agency=agency,
        subject_id=subject,
        matter=matter,
        purpose=purpose,
        decision=decision,
        hits=hits,
        position=position,
        catalogue_version=version,
        checked_at=checked_at,
        batch_id=batch_id,
        feedback=feedback,
    )


async def read_record(pool: asyncpg.Pool, agency: Agency, check_id: str) -> CheckRecord:
    async with pool.acquire() as conn:
        record = await fetch_record(conn, check_id)
    if record.agency != agency.code and not agency.scopes & {"audit", "admin"}:
        raise Forbidden(
            f"check {check_id} was made by another agency", field="check_id", rule="check.owner"
        )
    return record


async def add_feedback(
    pool: asyncpg.Pool,
    shard: int,
    agency: Agency,
    check_id: str,
    body: NewFeedback,
    *,
    now: datetime,
) -> tuple[Feedback, bool]:
    """Record feedback; returns it and whether it is new."""
    async with pool.acquire() as conn, conn.transaction():
        record = await fetch_record(conn, check_id)
        if record.agency != agency.code:
            raise Forbidden(
                "only the agency that made a check gives feedback on it",
                field="check_id",
                rule="check.owner",
            )
        hit = next(
            (h for h in record.hits if any(m.code == body.measure_code for m in h.measures)), None
        )
        if hit is None:
            raise RuleViolation(
                f"check {check_id} returned no measure {body.measure_code!r}",
                field="measure_code",
                rule="feedback.measure",
            )
        inserted = await conn.fetchrow(
            "INSERT INTO check_feedback (check_id, measure_code, agency, applied, note, "
            "recorded_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING "
            "RETURNING recorded_at",
            check_id,
            body.measure_code,
            agency.code,
            body.applied,
            body.note,
            now,
        )
        if inserted is None:
            existing = next(f for f in record.feedback if f.measure_code == body.measure_code)
            if (existing.applied, existing.note) != (body.applied, body.note):
                raise Conflict(
                    f"feedback on {body.measure_code} for check {check_id} was already given "
                    "with other content",
                    field="measure_code",
                    rule="feedback.given",
                )
            return existing, False
        counts: Counter[tuple[str, str]] = Counter({("measures.feedback", body.measure_code): 1})
        if body.applied:
            counts.update(
                {
                    ("measures.applied", body.measure_code): 1,
                    ("applied.by_agency", agency.code): 1,
                    ("applied.by_list", hit.list): 1,
                    ("applied.by_region", hit.region): 1,
                }
            )
        await upsert_counts(conn, shard, counts)
    feedback = Feedback(
        check_id=check_id,
        measure_code=body.measure_code,
        applied=body.applied,
        note=body.note,
        agency=agency.code,
        recorded_at=now,
    )
    return feedback, True


async def stats(pool: asyncpg.Pool, now: datetime) -> Stats:
    """Listings in force from the listings read model; the rest from the usage counters."""
    sections: dict[str, dict[str, dict[str, int]]] = {
        s: {} for s in ("listings", "checks", "hits", "measures", "applied")
    }
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT list, region, authority, count(*) AS n FROM listings "
            f"WHERE status <> 'delisted' AND {IN_FORCE.replace('$2', '$1')} "
            "GROUP BY GROUPING SETS ((list), (region), (authority))",
            now,
        )
        for row in rows:
            for by in ("list", "region", "authority"):
                if row[by] is not None:
                    sections["listings"].setdefault(f"by_{by}", {})[row[by]] = row["n"]
        for row in await conn.fetch(
            "SELECT dimension, key, sum(n)::bigint AS n FROM check_counts GROUP BY dimension, key"
        ):
            section, _, by = row["dimension"].partition(".")
            if section in sections:
                sections[section].setdefault(by, {})[row["key"]] = row["n"]
    totals = {
        "listings_in_force": sum(sections["listings"].get("by_list", {}).values()),
        "checks": sum(sections["checks"].get("by_agency", {}).values()),
        "hits": sum(sections["hits"].get("by_list", {}).values()),
        "feedback": sum(sections["measures"].get("feedback", {}).values()),
        "applied": sum(sections["measures"].get("applied", {}).values()),
    }
    return Stats(as_of=now, totals=totals, **sections)
