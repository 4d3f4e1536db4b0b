"""The webhook tables and every query on them (asyncpg; the hub's schema is the search path).

    webhook_subscriptions  one row per subscription: url, secret, filter, and the log position
                           it was created at (it receives the events after that position)
    webhook_cursor         one row: the last log position fanned out into deliveries
    webhook_deliveries     one row per (subscription, event): the signed body to POST and its
                           state: pending -> delivered, or pending -> dead after the last
                           attempt; `held` while an earlier delivery for the same subject in
                           the same subscription is pending or dead

Invariant, per (subscription, subject): at most one delivery is `pending` or `dead`, and it is
the open one with the lowest position; every later open one is `held`. Fan-out keeps it when
it inserts, success promotes the next held one, and redelivery only turns dead into pending.
So deliveries that are due never include two of one subject: no query has to look for holes.

Fan-out and the creation or deletion of a subscription lock the cursor row (exclusive and
shared), so a new subscription sees exactly the events after its `created_position`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

DDL = """
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id uuid PRIMARY KEY,
    agency text NOT NULL,
    url text NOT NULL,
    secret text NOT NULL,
    lists text[] NOT NULL,
    events text[] NOT NULL,
    regions text[] NOT NULL,
    created_at timestamptz NOT NULL,
    created_position bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_subscriptions_agency
    ON webhook_subscriptions (agency, created_at, id);
CREATE TABLE IF NOT EXISTS webhook_cursor (
    id smallint PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id bigserial PRIMARY KEY,
    subscription_id uuid NOT NULL REFERENCES webhook_subscriptions (id) ON DELETE CASCADE,
    event_id text NOT NULL,
    position bigint NOT NULL,
    type text NOT NULL,
    subject text NOT NULL,
    body bytea NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    due_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    last_attempt_at timestamptz,
    last_status integer,
    last_error text,
    delivered_at timestamptz,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (due_at, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_open
    ON webhook_deliveries (subscription_id, subject, position) WHERE status <> 'delivered';
CREATE INDEX IF NOT EXISTS webhook_deliveries_by_status
    ON webhook_deliveries (subscription_id, status, id);
CREATE INDEX IF NOT EXISTS webhook_deliveries_done
    ON webhook_deliveries (delivered_at) WHERE status = 'delivered';
INSERT INTO webhook_cursor (id, position)
    SELECT 1, coalesce(max(notification_id), 0) FROM credit_events
    ON CONFLICT (id) DO NOTHING;
"""

DELIVERY_COLUMNS = (
    "subscription_id",
    "event_id",
    "position",
    "type",
    "subject",
    "body",
    "status",
    "attempts",
    "due_at",
    "created_at",
)
_SUBSCRIPTION_COLUMNS = (
    "id, agency, url, secret, lists, events, regions, created_at, created_position"
)


def region_matches(wanted: str, region: str) -> bool:
    """GB/T 2260 hierarchy: 320000 covers Jiangsu, 320100 covers Nanjing, 320102 itself."""
    if wanted.endswith("0000"):
        return region.startswith(wanted[:2])
    if wanted.endswith("00"):
        return region.startswith(wanted[:4])
    return region == wanted


@dataclass(frozen=True, slots=True)
class Subscription:
    id: UUID
    agency: str
    url: str
    secret: str
    lists: tuple[str, ...]
    events: tuple[str, ...]
    regions: tuple[str, ...]
    created_at: datetime
    created_position: int

    def matches(self, type_name: str, list_name: str | None, region: str | None) -> bool:
        """Every non-empty part of the filter must accept the event."""
        if self.events and type_name not in self.events:
            return False
        if self.lists and list_name not in self.lists:
            return False
        return not self.regions or (
            region is not None and any(region_matches(r, region) for r in self.regions)
        )


def lock_key(schema: str, name: str) -> int:
    """An advisory lock key; locks are per database, so the schema keeps hubs apart."""
    return zlib.crc32(f"webhooks:{schema}:{name}".encode())


def _subscription(row: asyncpg.Record) -> Subscription:
    return Subscription(
        row["id"],
        row["agency"],
        row["url"],
        row["secret"],
        tuple(row["lists"]),
        tuple(row["events"]),
        tuple(row["regions"]),
        row["created_at"],
        row["created_position"],
    )


async def setup(conn: Connection, schema: str) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema, "ddl"))
        await conn.execute(DDL)


# -- the cursor ----------------------------------------------------------------------------


async def lock_cursor(conn: Connection, *, share: bool = False) -> int:
    mode = "SHARE" if share else "UPDATE"
    return int(await conn.fetchval(f"SELECT position FROM webhook_cursor WHERE id = 1 FOR {mode}"))


async def set_cursor(conn: Connection, position: int) -> None:
    await conn.execute("UPDATE webhook_cursor SET position = $1 WHERE id = 1", position)


async def head(conn: Connection) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(notification_id), 0) FROM credit_events"))


# -- subscriptions -------------------------------------------------------------------------


async def insert_subscription(conn: Connection, sub: Subscription) -> None:
    await conn.execute(
        f"INSERT INTO webhook_subscriptions ({_SUBSCRIPTION_COLUMNS}) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        sub.id,
        sub.agency,
        sub.url,
        sub.secret,
        list(sub.lists),
        list(sub.events),
        list(sub.regions),
        sub.created_at,
        sub.created_position,
    )


async def count_subscriptions(conn: Connection, agency: str) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM webhook_subscriptions WHERE agency = $1", agency)
    )


async def agency_subscriptions(conn: Connection, agency: str) -> list[Subscription]:
    rows = await conn.fetch(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE agency = $1 "
        "ORDER BY created_at, id",
        agency,
    )
    return [_subscription(r) for r in rows]


async def subscription(conn: Connection, agency: str, sub_id: UUID) -> Subscription | None:
    row = await conn.fetchrow(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE id = $1 AND agency = $2",
        sub_id,
        agency,
    )
    return None if row is None else _subscription(row)


async def delete_subscription(conn: Connection, agency: str, sub_id: UUID) -> bool:
    status = await conn.execute(
        "DELETE FROM webhook_subscriptions WHERE id = $1 AND agency = $2", sub_id, agency
    )
    return bool(status != "DELETE 0")


async def all_subscriptions(conn: Connection) -> list[Subscription]:
    rows = await conn.fetch(f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions")
    return [_subscription(r) for r in rows]


# -- fan-out -------------------------------------------------------------------------------


class NewDelivery(NamedTuple):
    """One event for one subscription, as fan-out found it."""

    subscription_id: UUID
    event_id: str
    position: int
    type: str
    subject: str
    body: bytes


async def open_pairs(conn: Connection, pairs: Sequence[tuple[UUID, str]]) -> set[tuple[UUID, str]]:
    """Which (subscription, subject) pairs already have an undelivered delivery."""
    subs, subjects = zip(*pairs, strict=True) if pairs else ((), ())
    rows = await conn.fetch(
        "SELECT DISTINCT d.subscription_id, d.subject FROM webhook_deliveries d "
        "JOIN unnest($1::uuid[], $2::text[]) AS p(s, subj) "
        "ON d.subscription_id = p.s AND d.subject = p.subj WHERE d.status <> 'delivered'",
        list(subs),
        list(subjects),
    )
    return {(r[0], r[1]) for r in rows}


async def insert_deliveries(conn: Connection, new: Sequence[NewDelivery], now: datetime) -> int:
    """Queue deliveries given in log order: each subject's first open one is pending, every
    later one held (the invariant above); returns how many it queued."""
    open_ = await open_pairs(conn, list({(d.subscription_id, d.subject) for d in new}))
    records: list[tuple[Any, ...]] = []
    for d in new:
        pair = (d.subscription_id, d.subject)
        records.append((*d, "held" if pair in open_ else "pending", 0, now, now))
        open_.add(pair)
    if records:
        await conn.copy_records_to_table(
            "webhook_deliveries", records=records, columns=DELIVERY_COLUMNS
        )
    return len(records)
