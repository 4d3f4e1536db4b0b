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

SESSION_SETUP = "SET plan_cache_mode = force_custom_plan; SET synchronous_commit = off"
"""For a runner's connection.

- A plan for each batch's statements as the tables are now: a generic plan cached while a
  table was empty keeps seq-scanning it as it grows (measured: the history projection's
  close-UPDATE took 38 ms a batch at 100,000 rows, and growing).
- Asynchronous commit: a batch's commit does not wait for its WAL flush. A read model is
  derived from the log, and its rows and its position commit in one transaction, so a
  database crash can lose only the last batches whole (WAL is replayed in order: never a
  later batch without an earlier one), and the runner applies them again from the position
  that survived: nothing twice, nothing skipped. Waiting for the flush bought nothing, and
  each projection's commit took a turn at the WAL flush that a new listing's commit could
  queue behind (on the all-in-one listings bench the difference was below the noise).
"""

_READ = (
    "SELECT p.position, e.notification_id, e.originator_id, e.originator_version, e.topic, "
    "e.state FROM (SELECT coalesce((SELECT position FROM projection_positions "
    "WHERE name = $1), 0) AS position) p "
    f"LEFT JOIN LATERAL (SELECT * FROM {EVENTS_TABLE} WHERE notification_id > p.position "
    "AND notification_id <= $2 ORDER BY notification_id LIMIT $3) e ON true"
)
"""A projection's stored position and up to $3 events after it (up to $2), in one round
trip: one row with NULL event columns when there are none."""


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
        self.busy_coalesce_seconds = 0.025
        self.busy_events = 64
        """After a catch-up of `busy_events` or more, wake-ups gather for `busy_coalesce_seconds`
        rather than `coalesce_seconds` (see `_follow`)."""

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
        async with self.pool.acquire() as conn:
            await conn.execute(SESSION_SETUP)  # a pooled connection is RESET on release
            return await self._step(conn, upto)

    async def catch_up(
        self,
        *,
        upto: int | None = None,
        progress: Callable[[int], None] | None = None,
        conn: Connection | None = None,
    ) -> int:
        """Apply batches until the log's end (as of the last read) or `upto`; on `conn` when
        given (the runner's own, set up with `SESSION_SETUP`), else on a pooled one."""
        if conn is None:
            async with self.pool.acquire() as pooled:
                await pooled.execute(SESSION_SETUP)
                return await self.catch_up(upto=upto, progress=progress, conn=pooled)
        total = 0
        while applied := await self._step(conn, upto):
            total += applied
            if progress is not None:
                progress(applied)
            if applied < self.batch_size:  # a short batch: the read found the end of the log
                break
        return total

    async def _step(self, conn: Connection, upto: int | None) -> int:
        """One batch in round trips: read (the stored position and the events after it, in
        one statement, outside the transaction), BEGIN, the projection's statements, the new
        position, COMMIT. An empty read costs one round trip and no transaction. Reading
        before BEGIN is safe: events are immutable, and only the holder of the projection's
        lock moves its position (a concurrent runner without it could apply a batch twice
        with a read inside the transaction as well: READ COMMITTED does not stop it)."""
        rows = await conn.fetch(
            _READ, self.name, upto if upto is not None else 2**62, self.batch_size
        )
        start = int(rows[0][0]) if rows else 0
        if not rows or rows[0][1] is None:
            self.position = start
            return 0
        events = [RawEvent(r[1], r[2], r[3], r[4], r[5]) for r in rows]
        last = events[-1].position
        async with conn.transaction():
            await self.projection.apply(conn, events)
            await conn.execute(
                "UPDATE projection_positions SET position = $2, updated_at = now() WHERE name = $1",
                self.name,
                last,
            )
        self.position = last
        POSITION.labels(self.name).set(last)
        return len(events)

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
        """Hold the projection's lock, then follow the log until `stop` is set; when the
        connection is lost (the database restarted), take the lock again on a new one. A batch
        that fails otherwise (a bug, an event it cannot read) is logged and tried again, with
        growing pauses: the projection stops there, visibly (`hub_projection_lag_*`), and never
        skips an event."""
        failures, failed_at = 0, -1
        while not stop.is_set():
            try:
                await self._run_locked(stop, poll_seconds)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.warning("projection_reconnect", projection=self.name, error=str(exc))
                pause = poll_seconds
            except Exception:  # a batch it cannot apply: say so, and try again (never skip it)
                failures = failures + 1 if self.position == failed_at else 1
                failed_at = self.position
                log.exception("projection_failed", projection=self.name, position=self.position)
                pause = min(30.0, poll_seconds * 2 ** min(failures, 5))
            else:
                return  # it returns when `stop` is set
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    async def _run_locked(self, stop: asyncio.Event, poll_seconds: float) -> None:
        """The batches run on the connection that holds the lock: no pool acquire and no
        reset per batch (a round trip each, and this VM spends ~60-100 µs of CPU on one)."""
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
                await lock_conn.execute(SESSION_SETUP)
                await self._follow(stop, poll_seconds, lock_conn)
            finally:
                if not lock_conn.is_closed():
                    await lock_conn.execute("SELECT pg_advisory_unlock($1)", key)

    async def _follow(self, stop: asyncio.Event, poll_seconds: float, conn: Connection) -> None:
        last_lag = 0.0
        while not stop.is_set():
            self.wakeup.clear()
            try:
                applied = await self.catch_up(conn=conn)
            except (asyncpg.PostgresError, OSError) as exc:
                if conn.is_closed():
                    raise
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
                # A commit woke us (the committer and NOTIFY both do): let the wake-ups and the
                # commits of concurrent writers gather, and apply them in one transaction. When
                # the last catch-up was large, writers are busy: wait longer, for batches that
                # cost less per event (a batch's fixed cost is some ten round trips across its
                # statements). Measured on the all-in-one listings bench, 32 clients: 25 ms
                # gave 4,118-4,592 listings/s against 3,152-3,226 with 3 ms; the read models
                # then trail the log by up to 25 ms more, under load only (the check index
                # and the relay follow on their own).
                busy = applied >= self.busy_events
                await asyncio.sleep(self.busy_coalesce_seconds if busy else self.coalesce_seconds)
