"""The projection runner: the log, in order, into read models, exactly once.

A projection applies a batch of raw events inside a transaction that the runner opens; the
runner stores the position of the batch's last event in `projection_positions` in the same
transaction, so a crash at any point leaves the read model and its position consistent: the
next run starts after the last committed batch, applying nothing twice and skipping nothing.

Positions are eventsourcing notification ids. Writers lock the events table, so ids follow
commit order and a reader that asks for `position > p` never skips a committed event, though
ids may have gaps. Only one process runs a given projection at a time (an advisory lock); the
others wait and take over when it goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

import asyncpg
import structlog
from prometheus_client import Gauge

from schemas.codec import decode_state
from schemas.log import RawEvent

log = structlog.get_logger(__name__)

EVENTS_TABLE = "credit_events"

POSITION = Gauge("hub_projection_position", "Last log position applied.", ["projection"])
LAG_EVENTS = Gauge("hub_projection_lag_events", "Log events not yet applied.", ["projection"])
LAG_SECONDS = Gauge(
    "hub_projection_lag_seconds", "Age of the oldest event not yet applied.", ["projection"]
)

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""A connection, whether pooled or not."""

POSITIONS_DDL = """
CREATE TABLE IF NOT EXISTS projection_positions (
    name text PRIMARY KEY,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""


class Projection(Protocol):
    name: str

    async def setup(self, conn: Connection) -> None:
        """Create the read model's tables; safe to run twice."""

    async def reset(self, conn: Connection) -> None:
        """Empty the read model, for a replay from position 0."""

    async def apply(self, conn: Connection, events: Sequence[RawEvent]) -> None:
        """Apply events in log order, inside the runner's transaction."""


async def read_events(
    conn: Connection, after: int, limit: int, *, upto: int | None = None
) -> list[RawEvent]:
    rows = await conn.fetch(
        f"SELECT notification_id, originator_id, originator_version, topic, state "
        f"FROM {EVENTS_TABLE} WHERE notification_id > $1 AND notification_id <= $2 "
        f"ORDER BY notification_id LIMIT $3",
        after,
        upto if upto is not None else 2**62,
        limit,
    )
    return [RawEvent(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def max_position(conn: Connection) -> int:
    value = await conn.fetchval(f"SELECT max(notification_id) FROM {EVENTS_TABLE}")
    return int(value or 0)


class ProjectionRunner:
    def __init__(
        self, pool: asyncpg.Pool, projection: Projection, *, batch_size: int = 2000
    ) -> None:
        self.pool = pool
        self.projection = projection
        self.batch_size = batch_size
        self.name = projection.name
        self.position = 0
        self.wakeup = asyncio.Event()
        self.coalesce_seconds = 0.003

    async def setup(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(POSITIONS_DDL)
            await self.projection.setup(conn)
            await conn.execute(
                "INSERT INTO projection_positions(name, position) VALUES ($1, 0) "
                "ON CONFLICT (name) DO NOTHING",
                self.name,
            )
            self.position = await self.stored_position(conn)

    async def stored_position(self, conn: Connection) -> int:
        value = await conn.fetchval(
            "SELECT position FROM projection_positions WHERE name = $1", self.name
        )
        return int(value or 0)

    async def reset(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self.projection.reset(conn)
            await conn.execute(
                "UPDATE projection_positions SET position = 0, updated_at = now() WHERE name = $1",
                self.name,
            )
        self.position = 0

    async def step(self, *, upto: int | None = None) -> int:
        """Apply one batch; returns how many events it applied."""
        async with self.pool.acquire() as conn, conn.transaction():
            # A plan for each batch's statements as the tables are now: a generic plan cached
            # while a table was empty keeps seq-scanning it as it grows (measured: the history
            # projection's close-UPDATE took 38 ms a batch at 100,000 rows, and growing).
            await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            start = await self.stored_position(conn)
            events = await read_events(conn, start, self.batch_size, upto=upto)
            if not events:
                self.position = start
                return 0
            await self.projection.apply(conn, events)
            last = events[-1].position
            await conn.execute(
                "UPDATE projection_positions SET position = $2, updated_at = now() WHERE name = $1",
                self.name,
                last,
            )
        self.position = last
        POSITION.labels(self.name).set(last)
        return len(events)

    async def catch_up(
        self, *, upto: int | None = None, progress: Callable[[int], None] | None = None
    ) -> int:
        total = 0
        while applied := await self.step(upto=upto):
            total += applied
            if progress is not None:
                progress(applied)
        return total

    async def _lag(self) -> None:
        """Lag in events, and in seconds: the age of the oldest event not yet applied."""
        async with self.pool.acquire() as conn:
            head = await max_position(conn)
            age = 0.0
            if head > self.position:
                state = await conn.fetchval(
                    f"SELECT state FROM {EVENTS_TABLE} WHERE notification_id > $1 "
                    "ORDER BY notification_id LIMIT 1",
                    self.position,
                )
                if state is not None:
                    recorded = decode_state(state).get("timestamp")
                    if isinstance(recorded, datetime):
                        age = max(0.0, (datetime.now(tz=UTC) - recorded).total_seconds())
        LAG_EVENTS.labels(self.name).set(max(0, head - self.position))
        LAG_SECONDS.labels(self.name).set(age)

    async def run(self, stop: asyncio.Event, *, poll_seconds: float = 1.0) -> None:
        """Hold the projection's lock, then follow the log until `stop` is set."""
        async with self.pool.acquire() as lock_conn:
            # advisory locks are per database: the schema keeps hubs in other schemas apart
            schema = await lock_conn.fetchval("SELECT current_schema()")
            key = zlib.crc32(f"projection:{schema}:{self.name}".encode())
            while not stop.is_set():
                if await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_seconds * 5)
            if stop.is_set():
                return
            try:
                await self._follow(stop, poll_seconds)
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def _follow(self, stop: asyncio.Event, poll_seconds: float) -> None:
        last_lag = 0.0
        while not stop.is_set():
            self.wakeup.clear()
            try:
                await self.catch_up()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("projection_retry", projection=self.name, error=str(exc))
                await asyncio.sleep(poll_seconds)
                continue
            if time.monotonic() - last_lag > poll_seconds:
                last_lag = time.monotonic()
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    await self._lag()
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.wakeup.wait()),
            ]
            await asyncio.wait(waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if self.wakeup.is_set() and not stop.is_set():
                # a commit woke us (the committer and NOTIFY both do): let the wake-ups and
                # the commits of concurrent writers gather, and apply them in one transaction
                await asyncio.sleep(self.coalesce_seconds)
