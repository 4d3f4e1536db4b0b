"""The usage log: every answered check, durably, apart from the credit log.

Single checks are recorded in groups: the checks that arrive while a writer commits form one
group, stored as one row of `check_groups` (`records`: the checks' msgpack records one after
another; `offsets`: where each starts, and the end). A single check's id is its group's id
with the check's place in the group in the low 16 bits (a UUID with the version 8 layout: 48
bits of milliseconds, then random bits), so a record is found by its id with one primary-key
lookup and a slice of the group. A batch is one row of `checks` (its items compactly as
msgpack), as are the single checks of earlier versions (UUIDs of version 7).

Each group goes with its counters for statistics (`check_counts`) and the batches that
arrived with it into one statement, one commit. A check is answered only after its group has
committed, so every answer given is on disk, also across a crash; if the usage log cannot be
written the check fails with 503. Records are encoded when the check is decided, so a commit
does little more on the event loop than join bytes.

Counters are sharded by writer (`shard`), so writers in different processes never wait on
each other's row locks; statistics sum the shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from itertools import accumulate
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import structlog
from prometheus_client import Histogram

from hub.errors import Unavailable
from hub.metrics import Timings

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
CREATE TABLE IF NOT EXISTS check_groups (
    group_id uuid PRIMARY KEY,
    offsets integer[] NOT NULL,
    records bytea NOT NULL
);
DO $$ BEGIN
    IF (SELECT attstorage FROM pg_attribute
        WHERE attrelid = 'check_groups'::regclass AND attname = 'records') <> 'e' THEN
        -- out of line, uncompressed: no compression work per commit, and a read slices
        -- only the chunks it needs
        ALTER TABLE check_groups ALTER COLUMN records SET STORAGE EXTERNAL;
    END IF;
END $$;
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
_GROUP = """
grouped AS (
    INSERT INTO check_groups (group_id, offsets, records)
    SELECT $16::uuid, $17::integer[], $18::bytea WHERE $16::uuid IS NOT NULL
),"""
WRITE = f"""
WITH written AS (
    INSERT INTO checks ({", ".join(COLUMNS)})
    SELECT * FROM unnest({", ".join(f"${i}::{t}[]" for i, t in enumerate(_TYPES, 1))})
),{_GROUP}
counted AS (
    INSERT INTO check_counts (shard, dimension, key, n)
    SELECT $12, d, k, n FROM unnest($13::text[], $14::text[], $15::bigint[]) AS t(d, k, n)
    ON CONFLICT (shard, dimension, key) DO UPDATE SET n = check_counts.n + EXCLUDED.n
)
SELECT 1
"""
"""A group of single checks, batches and counters in one statement: one round trip, one
commit."""
WRITE_GROUP = """
WITH grouped AS (
    INSERT INTO check_groups (group_id, offsets, records) VALUES ($3, $4, $5)
)
INSERT INTO check_counts (shard, dimension, key, n)
SELECT $1, e->>0, e->>1, (e->>2)::bigint FROM jsonb_array_elements($2::text::jsonb) AS e
ON CONFLICT (shard, dimension, key) DO UPDATE SET n = check_counts.n + EXCLUDED.n
"""
"""The same for a group of single checks only, the usual case. The counters go as one JSON
array of [dimension, key, n] (in order): asyncpg encodes three text/bigint arrays element by
element, ~7 us of the event loop per group more than one string msgspec encodes."""
_counters = msgspec.json.Encoder()
READ_GROUPED = """
SELECT substring(records FROM offsets[$2 + 1] + 1 FOR offsets[$2 + 2] - offsets[$2 + 1])
FROM check_groups WHERE group_id = $1 AND $2 + 2 <= cardinality(offsets)
"""
"""The record of item `$2` (from 0) of group `$1`; no row when the group has fewer."""

Row = tuple[
    UUID, str, datetime, int, int, int, str | None, str | None, str | None, str | None, bytes
]
Counts = Iterable[tuple[tuple[str, str], int]]

INDEX_BITS = 16
INDEX_MASK = (1 << INDEX_BITS) - 1
GROUPED_VERSION = 8

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
# observed as plain numbers, added to the histograms before each scrape (hub.metrics)
_BATCH_SIZE = Timings(BATCH_SIZE)
_COMMIT_SECONDS = Timings(COMMIT_SECONDS)


_random = random.Random(os.urandom(32))
"""Random bits of group ids without a system call per group (ids are unique, not secret:
reading a check's record needs its agency's key), as `hub.checks.service.new_check_id`."""


def group_id(now_ms: int, random_bits: int) -> int:
    """A group's id as an int: the version 8 layout with the low `INDEX_BITS` bits zero."""
    value = now_ms << 80 | (random_bits << INDEX_BITS & ((1 << 80) - 1))
    value = value & ~(0xF << 76) | GROUPED_VERSION << 76
    return value & ~(0x3 << 62) | 0x2 << 62


def grouped(check_id: UUID) -> tuple[UUID, int] | None:
    """(group id, place in the group) of a single check recorded in a group, else None."""
    if check_id.version != GROUPED_VERSION:
        return None
    value = check_id.int
    return UUID(int=value & ~INDEX_MASK), value & INDEX_MASK


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


class _Group:
    """What one transaction writes: single checks, batch rows and counters; and a future per
    check or batch waiting for it (not one shared future: cancelling one request's wait
    would cancel every other's).

    A single check's counters are its keys (each counts one) in `keys`, counted when the
    group is written (one `Counter` over the list, in C, instead of a dict update per key
    per check); a batch's are added to `counts`."""

    __slots__ = ("counts", "id", "keys", "prefix", "records", "rows", "size", "waiters")

    def __init__(self, ident: int) -> None:
        self.id = ident
        text = str(UUID(int=ident))
        self.prefix = text[:-4]  # the last 4 hex digits are the place in the group
        self.records: list[bytes] = []
        self.rows: list[Row] = []
        self.counts: dict[tuple[str, str], int] = {}
        self.keys: list[tuple[str, str]] = []
        self.size = 0
        self.waiters: list[asyncio.Future[None]] = []

    def committed(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():  # not cancelled
                waiter.set_result(None)

    def failed(self, reason: str) -> None:
        """Each waiter gets an exception of its own (one raised in hundreds of tasks would
        collect all their tracebacks)."""
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(Unavailable(reason, retry_after=1))
                waiter.exception()  # retrieved: no warning if its request has gone


class UsageLog:
    """Group commit of check records on `writers` dedicated connections.

    Records arriving while the writers are busy join the open group; a free writer takes it
    (a new group opens for what comes next), writes it with one statement and answers all
    its checks at once. Each writer has its own counter shard, so writers never wait on each
    other's row locks.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        writers: int = 2,
        max_records: int = 512,
    ) -> None:
        if not 0 < max_records <= INDEX_MASK + 1:
            raise ValueError(f"max_records must lie in 1..{INDEX_MASK + 1}")
        self.pool = pool
        self.connect = connect
        self.writers = writers
        self.max_records = max_records
        base = secrets.randbelow(4096) * 8
        self.shards = [base + i for i in range(writers)]
        self.shard = self.shards[0]
        self._ready: list[_Group] = []  # full groups, oldest first
        self._open: _Group | None = None
        self._event = asyncio.Event()
        self._stopping = False
        self._places = tuple(f"{place:04x}" for place in range(max_records))
        """The last 4 hex digits of a check id: its place in the group, formatted once."""
        self._loop: asyncio.AbstractEventLoop | None = None

    def _future(self) -> asyncio.Future[None]:
        """A future of the running loop. The loop is looked up once, not per check: on
        Python 3.11 `asyncio.get_running_loop()` makes a getpid system call each time (~0.3 us
        of every check)."""
        loop = self._loop
        if loop is None or not loop.is_running():  # first use, or a loop of an earlier run
            loop = self._loop = asyncio.get_running_loop()
        return loop.create_future()

    async def setup(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(DDL)

    def _group(self) -> _Group:
        group = self._open
        if group is None or group.size >= self.max_records:
            if group is not None:
                self._ready.append(group)
            ident = group_id(time.time_ns() // 1_000_000, _random.getrandbits(64))
            group = self._open = _Group(ident)
            self._event.set()
        return group

    def add(
        self, record: bytes, keys: Iterable[tuple[str, str]]
    ) -> tuple[str, asyncio.Future[None]]:
        """Put a single check's record in the open group, with the counter keys it adds one
        to (a key may repeat): its id, and the future of the group's commit (await it before
        answering)."""
        if self._stopping:
            raise Unavailable("the hub is shutting down", retry_after=1)
        group = self._open
        if group is None or group.size >= self.max_records:
            group = self._group()
        place = len(group.records)
        group.records.append(record)
        group.size += 1
        group.keys += keys
        done = self._future()
        group.waiters.append(done)
        return group.prefix + self._places[place], done

    async def record(self, row: Row, counts: Counts) -> None:
        """Return once `row` (a batch) is committed; Unavailable when the usage log cannot
        be written."""
        if self._stopping:
            raise Unavailable("the hub is shutting down", retry_after=1)
        group = self._group()
        group.rows.append(row)
        group.size += 1
        tally = group.counts
        for key, n in counts:
            tally[key] = tally.get(key, 0) + n
        done = self._future()
        group.waiters.append(done)
        await done

    def _take(self) -> _Group | None:
        if self._ready:
            return self._ready.pop(0)
        group, self._open = self._open, None
        return group

    async def run(self, stop: asyncio.Event) -> None:
        """Write records until `stop` is set, then write what is pending and return."""
        stopper = asyncio.ensure_future(stop.wait())
        stopper.add_done_callback(lambda _: self._event.set())
        try:
            await asyncio.gather(*(self._writer(shard, stop) for shard in self.shards))
        finally:
            self._stopping = True
            stopper.cancel()
            for group in (*self._ready, self._open):
                if group is not None:
                    group.failed("the hub is shutting down")
            self._ready.clear()
            self._open = None

    async def _writer(self, shard: int, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection | None = None
        try:
            while True:
                await self._event.wait()
                await asyncio.sleep(0)  # checks decided in this turn of the loop join too
                group = self._take()
                if group is None:
                    if stop.is_set():
                        return
                    self._event.clear()
                    continue
                try:
                    if conn is None or conn.is_closed():
                        conn = await self.connect()
                    await self._commit(conn, shard, group)
                except asyncio.CancelledError:  # stopped mid-write: not known to be on disk
                    group.failed("the hub is shutting down")
                    raise
                except Exception as exc:
                    log.exception("usage_log_failed", records=group.size)
                    group.failed(f"the usage log could not record the check: {exc}")
                    if conn is not None:
                        conn.terminate()
                        conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    @staticmethod
    async def _commit(conn: asyncpg.Connection, shard: int, group: _Group) -> None:
        counts = Counter(group.keys)
        for key, n in group.counts.items():
            counts[key] += n
        items = sorted(counts.items())  # one lock order for every transaction
        rows = group.rows
        columns: list[list[Any]] = (
            [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * len(_TYPES)
        )
        records = group.records
        offsets = [0, *accumulate(map(len, records))]
        started = time.perf_counter()
        if rows:
            await conn.execute(
                WRITE,
                *columns,
                shard,
                [d for (d, _), _ in items],
                [k for (_, k), _ in items],
                [n for _, n in items],
                UUID(int=group.id) if records else None,
                offsets,
                b"".join(records),
            )
        else:
            counted = _counters.encode([(d, k, n) for (d, k), n in items]).decode()
            await conn.execute(
                WRITE_GROUP, shard, counted, UUID(int=group.id), offsets, b"".join(records)
            )
        _COMMIT_SECONDS.observe(time.perf_counter() - started)
        _BATCH_SIZE.observe(group.size)
        group.committed()
