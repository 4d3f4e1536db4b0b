"""The usage log: every answered check, durably, apart from the credit log.

Checks are recorded in the `checks` table (one row per single check; one row per batch,
holding its items compactly as msgpack) together with counters for statistics
(`check_counts`), by a group-commit writer: the records of all checks that arrive while one
transaction commits go into the next one, a single COPY plus one counter upsert. A check is
answered only after its transaction has committed, so every answer given is on disk, also
across a crash; if the usage log cannot be written the check fails with 503.

Counters are sharded by writer (`shard`), so writers in different processes never wait on
each other's row locks; statistics sum the shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from prometheus_client import Histogram

from hub.errors import Unavailable

log = structlog.get_logger(__name__)

DDL = """
CREATE TABLE IF NOT EXISTS checks (
    check_id uuid PRIMARY KEY,
    agency text NOT NULL,
    checked_at timestamptz NOT NULL,
    position bigint NOT NULL,
    catalogue_version integer NOT NULL,
    items integer NOT NULL,
    subject_id text,
    matter text,
    purpose text,
    decision text,
    detail bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS check_feedback (
    check_id text NOT NULL,
    measure_code text NOT NULL,
    agency text NOT NULL,
    applied boolean NOT NULL,
    note text,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (check_id, measure_code)
);
CREATE TABLE IF NOT EXISTS check_counts (
    shard smallint NOT NULL,
    dimension text NOT NULL,
    key text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (shard, dimension, key)
);
"""
COLUMNS = (
    "check_id",
    "agency",
    "checked_at",
    "position",
    "catalogue_version",
    "items",
    "subject_id",
    "matter",
    "purpose",
    "decision",
    "detail",
)
UPSERT_COUNTS = """
INSERT INTO check_counts (shard, dimension, key, n)
SELECT $1, d, k, n FROM unnest($2::text[], $3::text[], $4::bigint[]) AS t(d, k, n)
ON CONFLICT (shard, dimension, key) DO UPDATE SET n = check_counts.n + EXCLUDED.n
"""
_TYPES = (
    "uuid",
    "text",
    "timestamptz",
    "bigint",
    "integer",
    "integer",
    "text",
    "text",
    "text",
    "text",
    "bytea",
)
WRITE = f"""
WITH written AS (
    INSERT INTO checks ({", ".join(COLUMNS)})
    SELECT * FROM unnest({", ".join(f"${i}::{t}[]" for i, t in enumerate(_TYPES, 1))})
)
INSERT INTO check_counts (shard, dimension, key, n)
SELECT $12, d, k, n FROM unnest($13::text[], $14::text[], $15::bigint[]) AS t(d, k, n)
ON CONFLICT (shard, dimension, key) DO UPDATE SET n = check_counts.n + EXCLUDED.n
"""
"""Records and counters in one statement: one round trip, one commit."""

Row = tuple[
    UUID, str, datetime, int, int, int, str | None, str | None, str | None, str | None, bytes
]
Counts = Iterable[tuple[tuple[str, str], int]]

BATCH_SIZE = Histogram(
    "hub_usage_log_batch_records",
    "Check records (a batch of checks is one) committed per usage-log transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
COMMIT_SECONDS = Histogram(
    "hub_usage_log_commit_seconds",
    "Time of one usage-log transaction.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)


async def upsert_counts(conn: Any, shard: int, counts: Counter[tuple[str, str]]) -> None:
    """Add to the counters; sorted, so concurrent transactions lock rows in one order."""
    if not counts:
        return
    items = sorted(counts.items())
    await conn.execute(
        UPSERT_COUNTS,
        shard,
        [d for (d, _), _ in items],
        [k for (_, k), _ in items],
        [n for _, n in items],
    )


class UsageLog:
    """Group commit of check records on `writers` dedicated connections.

    Each writer takes every record pending, writes them with one statement and answers them;
    while one writer waits for its commit, another takes what arrived meanwhile. Each writer
    has its own counter shard, so writers never wait on each other's row locks.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        writers: int = 2,
        max_records: int = 512,
    ) -> None:
        self.pool = pool
        self.connect = connect
        self.writers = writers
        self.max_records = max_records
        base = secrets.randbelow(4096) * 8
        self.shards = [base + i for i in range(writers)]
        self.shard = self.shards[0]
        self._pending: list[tuple[Row, Counts, asyncio.Future[None]]] = []
        self._event = asyncio.Event()
        self._stopping = False

    async def setup(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(DDL)

    async def record(self, row: Row, counts: Counts) -> None:
        """Return once `row` is committed; Unavailable when the usage log cannot be written."""
        if self._stopping:
            raise Unavailable("the hub is shutting down", retry_after=1)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, counts, future))
        self._event.set()
        await future

    async def run(self, stop: asyncio.Event) -> None:
        """Write records until `stop` is set, then write what is pending and return."""
        stopper = asyncio.ensure_future(stop.wait())
        stopper.add_done_callback(lambda _: self._event.set())
        try:
            await asyncio.gather(*(self._writer(shard, stop) for shard in self.shards))
        finally:
            self._stopping = True
            stopper.cancel()
            for _, _, future in self._pending:
                if not future.done():
                    future.set_exception(Unavailable("the hub is shutting down", retry_after=1))
            self._pending.clear()

    async def _writer(self, shard: int, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await self._event.wait()
                if not self._pending:
                    if stop.is_set():
                        return
                    self._event.clear()
                    continue
                batch = self._pending[: self.max_records]
                del self._pending[: self.max_records]
                try:
                    if conn is None or conn.is_closed():
                        conn = await self.connect()
                    await self._commit(conn, shard, batch)
                except Exception as exc:
                    log.exception("usage_log_failed", records=len(batch))
                    error = Unavailable(
                        f"the usage log could not record the check: {exc}", retry_after=1
                    )
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    if conn is not None:
                        conn.terminate()
                        conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    @staticmethod
    async def _commit(
        conn: asyncpg.Connection, shard: int, batch: list[tuple[Row, Counts, asyncio.Future[None]]]
    ) -> None:
        counts: Counter[tuple[str, str]] = Counter()
        for _, record_counts, _ in batch:
            for key, n in record_counts:
                counts[key] += n
        items = sorted(counts.items())  # one lock order for every transaction
        columns = [list(column) for column in zip(*(row for row, _, _ in batch), strict=True)]
        started = time.perf_counter()
        await conn.execute(
            WRITE,
            *columns,
            shard,
            [d for (d, _), _ in items],
            [k for (_, k), _ in items],
            [n for _, n in items],
        )
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        BATCH_SIZE.observe(len(batch))
        for _, _, future in batch:
            if not future.done():
                future.set_result(None)
