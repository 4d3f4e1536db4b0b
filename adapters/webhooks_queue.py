"""The webhook delivery queue: claiming due deliveries, recording outcomes, redelivery,
the views the API pages through, and its upkeep (see `adapters.webhooks_store` for the tables
and the per-subject invariant these statements keep)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from adapters.webhooks_store import Connection

_VIEW_COLUMNS = (
    "id, event_id, position, type, subject, status, attempts, due_at, last_attempt_at, "
    "last_status, last_error, delivered_at"
)


@dataclass(frozen=True, slots=True)
class Due:
    """A claimed delivery with what it takes to send it."""

    id: int
    subscription_id: UUID
    event_id: str
    subject: str
    body: bytes
    attempts: int
    url: str
    secret: str


async def claim_due(
    conn: Connection, now: datetime, lease_until: datetime, limit: int
) -> list[Due]:
    """Take up to `limit` due deliveries, pushing their due time to `lease_until` so that a
    crash mid-send retries them then, and no other worker takes them meanwhile."""
    rows = await conn.fetch(
        "WITH due AS (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND due_at <= $1 "
        "ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) "
        "UPDATE webhook_deliveries d SET due_at = $2 FROM due, webhook_subscriptions s "
        "WHERE d.id = due.id AND s.id = d.subscription_id "
        "RETURNING d.id, d.subscription_id, d.event_id, d.subject, d.body, d.attempts, "
        "s.url, s.secret",
        now,
        lease_until,
        limit,
    )
    return [Due(*r) for r in sorted(rows, key=lambda r: r[0])]


async def mark_delivered(conn: Connection, done: Sequence[tuple[Due, int]], now: datetime) -> None:
    """Delivered (with the receiver's status); the next held delivery of each of their
    subjects becomes due now."""
    if not done:
        return
    await conn.execute(
        "UPDATE webhook_deliveries d SET status = 'delivered', attempts = d.attempts + 1, "
        "last_attempt_at = $3, delivered_at = $3, last_status = u.status, last_error = NULL "
        "FROM unnest($1::bigint[], $2::int[]) AS u(id, status) WHERE d.id = u.id",
        [due.id for due, _ in done],
        [status for _, status in done],
        now,
    )
    await conn.execute(
        "UPDATE webhook_deliveries SET status = 'pending', due_at = $3 WHERE status = 'held' "
        "AND id IN (SELECT (SELECT w.id FROM webhook_deliveries w WHERE w.subscription_id = p.s "
        "AND w.subject = p.subj AND w.status <> 'delivered' ORDER BY w.position LIMIT 1) "
        "FROM unnest($1::uuid[], $2::text[]) AS p(s, subj))",
        [due.subscription_id for due, _ in done],
        [due.subject for due, _ in done],
        now,
    )


@dataclass(frozen=True, slots=True)
class Failure:
    due: Due
    status: int | None
    error: str
    retry_at: datetime | None
    """Due again then; None: dead."""


async def mark_failed(conn: Connection, failures: Sequence[Failure], now: datetime) -> None:
    """Failed attempts: each due again at its `retry_at`, or dead."""
    if not failures:
        return
    await conn.execute(
        "UPDATE webhook_deliveries d SET attempts = d.attempts + 1, last_attempt_at = $5, "
        "last_status = u.status, last_error = u.error, "
        "status = CASE WHEN u.retry_at IS NULL THEN 'dead' ELSE 'pending' END, "
        "due_at = coalesce(u.retry_at, d.due_at) "
        "FROM unnest($1::bigint[], $2::int[], $3::text[], $4::timestamptz[]) "
        "AS u(id, status, error, retry_at) WHERE d.id = u.id",
        [f.due.id for f in failures],
        [f.status for f in failures],
        [f.error for f in failures],
        [f.retry_at for f in failures],
        now,
    )


async def redeliver(
    conn: Connection, sub_id: UUID, now: datetime, ids: Sequence[int] | None
) -> int:
    """Dead letters back to pending with fresh attempts (each is its subject's first open)."""
    status = await conn.execute(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, due_at = $2 "
        "WHERE subscription_id = $1 AND status = 'dead' AND ($3::bigint[] IS NULL OR id = ANY($3))",
        sub_id,
        now,
        None if ids is None else list(ids),
    )
    return int(status.rpartition(" ")[2])


async def deliveries(
    conn: Connection, sub_id: UUID, status: str | None, after: int, limit: int
) -> list[asyncpg.Record]:
    if status is None:
        return await conn.fetch(
            f"SELECT {_VIEW_COLUMNS} FROM webhook_deliveries WHERE subscription_id = $1 "
            "AND id > $2 ORDER BY id LIMIT $3",
            sub_id,
            after,
            limit,
        )
    return await conn.fetch(
        f"SELECT {_VIEW_COLUMNS} FROM webhook_deliveries WHERE subscription_id = $1 "
        "AND status = $4 AND id > $2 ORDER BY id LIMIT $3",
        sub_id,
        after,
        limit,
        status,
    )


async def queue_stats(conn: Connection) -> tuple[dict[str, int], datetime | None]:
    """Undelivered deliveries by status, and the creation time of the oldest waiting one."""
    rows = await conn.fetch(
        "SELECT status, count(*), min(created_at) FROM webhook_deliveries "
        "WHERE status <> 'delivered' GROUP BY status"
    )
    counts = {r[0]: int(r[1]) for r in rows}
    waiting = [r[2] for r in rows if r[0] in ("pending", "held")]
    return counts, min(waiting) if waiting else None


async def prune_delivered(conn: Connection, before: datetime, limit: int) -> int:
    """Forget up to `limit` deliveries delivered before `before`; how many it removed."""
    status = await conn.execute(
        "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries "
        "WHERE status = 'delivered' AND delivered_at < $1 LIMIT $2)",
        before,
        limit,
    )
    return int(status.rpartition(" ")[2])
