"""The relay's reader of the credit log: batches in position order, with listing context.

Reads `credit_events` (eventsourcing's table; the position is `notification_id`) straight
through asyncpg. Writers lock the table, so positions follow commit order and asking for
`position > p` never skips a committed event (there may be gaps in the numbers).

Listing events after the registration carry no subject, list or region; `LogReader` finds
them in the registration (version 1 of the same aggregate), one indexed query per batch for
the aggregates it has not cached yet. The cache is bounded (least recently used out).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from adapters.cloudevents import LISTING_FAMILY, ListingContext, context_of, split_type
from adapters.relay_wire import Outgoing, kind_of, outgoing, registration_context
from schemas.codec import decode_state
from schemas.log import LogEvent, RawEvent, to_log_event

EVENTS_TABLE = "credit_events"
CACHE_SIZE = 200_000

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


_SELECT = (
    f"SELECT notification_id, originator_id, originator_version, topic, state "
    f"FROM {EVENTS_TABLE} WHERE notification_id > $1 ORDER BY notification_id LIMIT $2"
)


async def read_raw(conn: Connection, after: int, limit: int) -> list[RawEvent]:
    rows = await conn.fetch(_SELECT, after, limit)
    return [RawEvent(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def head_position(conn: Connection) -> int:
    value = await conn.fetchval(f"SELECT max(notification_id) FROM {EVENTS_TABLE}")
    return int(value or 0)


class LogReader:
    """Log events after a position, each with its listing context (None outside listings)."""

    def __init__(self, pool: asyncpg.Pool, *, cache_size: int = CACHE_SIZE) -> None:
        self.pool = pool
        self.cache_size = cache_size
        self._contexts: OrderedDict[str, ListingContext] = OrderedDict()

    async def read(self, after: int, limit: int) -> list[tuple[LogEvent, ListingContext | None]]:
        async with self.pool.acquire() as conn:
            raws = await read_raw(conn, after, limit)
            events = [to_log_event(raw) for raw in raws]
            missing = self._learn(events)
            if missing:
                await self._fetch(conn, missing)
        return [(event, self._context(event)) for event in events]

    async def read_outgoing(
        self, after: int, limit: int, *, prefix: str, source: str
    ) -> list[Outgoing]:
        """The relay's fast path: the same events as `read`, as ready messages."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(_SELECT, after, limit)  # no RawEvent: it costs 2 us each
            rows: list[tuple[asyncpg.Record, dict[str, Any], str | None]] = []
            missing: list[str] = []
            for record in records:
                state = decode_state(record[4])
                if kind_of(record[3]).family != LISTING_FAMILY:
                    rows.append((record, state, None))
                    continue
                aggregate_id = str(record[1])
                rows.append((record, state, aggregate_id))
                context = registration_context(state)
                if context is not None:
                    self._remember(aggregate_id, context)
                elif aggregate_id not in self._contexts:
                    missing.append(aggregate_id)
            if missing:
                await self._fetch(conn, missing)
        contexts = self._contexts
        return [
            outgoing(r[0], r[1], r[2], r[3], state, contexts.get(key) if key else None,
                     prefix, source)
            for r, state, key in rows
        ]  # fmt: skip

    async def head(self) -> int:
        async with self.pool.acquire() as conn:
            return await head_position(conn)

    def _learn(self, events: Sequence[LogEvent]) -> list[str]:
        """Cache the registrations in `events`; return listing ids still without context."""
        missing: list[str] = []
        for event in events:
            if split_type(event.type)[0] != LISTING_FAMILY:
                continue
            context = context_of(event)
            if context is not None:
                self._remember(event.aggregate_id, context)
            elif event.aggregate_id not in self._contexts:
                missing.append(event.aggregate_id)
        return missing

    async def _fetch(self, conn: Connection, ids: list[str]) -> None:
        rows = await conn.fetch(
            f"SELECT originator_id, state FROM {EVENTS_TABLE} "
            f"WHERE originator_id = ANY($1::uuid[]) AND originator_version = 1",
            [UUID(i) for i in set(ids)],
        )
        for row in rows:
            state: dict[str, Any] = decode_state(row["state"])
            context = registration_context(state)
            if context is not None:
                self._remember(str(row["originator_id"]), context)

    def _remember(self, aggregate_id: str, context: ListingContext) -> None:
        self._contexts[aggregate_id] = context
        self._contexts.move_to_end(aggregate_id)
        while len(self._contexts) > self.cache_size:
            self._contexts.popitem(last=False)

    def _context(self, event: LogEvent) -> ListingContext | None:
        if split_type(event.type)[0] != LISTING_FAMILY:
            return None
        return self._contexts.get(event.aggregate_id)
