"""Rebuilding the listings read model from position 0 in bulk, for `hub replay listings`.

The result is the table `ListingsProjection` builds event by event (tests compare digests),
made the way a bulk load is cheap:

1. The log is read in large pages of listing topics only, one page ahead. Events fold into
   rows in memory, a listing's events collapsing into one row; the fold state is bounded by
   `memory_rows`: beyond it the oldest rows are written out, by binary COPY into a fresh
   table without indexes, while the fold goes on. An event whose listing is no longer in
   memory (written out, or never registered) is not decoded: its position is set aside in a
   temporary table.
2. The events set aside are read back grouped by listing, in one sorted query joined with
   the rows written out; each listing's row is folded on, and replaced.
3. The fresh table gets the indexes and constraints, built once over all rows, and takes the
   live table's place; the position is recorded in the same transaction, so the live runner
   continues after it.

Everything from the fresh table to the position is one transaction on one connection; the
log is read on another. Readers of `listings` see the old rows until the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any
from uuid import UUID

import asyncpg

from projections._runner import EVENTS_TABLE, Connection
from projections.listings import (
    _LISTING_TOPICS,
    _REGISTRATIONS,
    COLUMNS,
    _apply,
    _decode_registration,
    _new_row,
)
from projections.replay import fresh_table, log_pages, swap_in
from schemas import events as ev

MEMORY_ROWS = 400_000
"""Rows kept in memory by default (about 300 MB); beyond them the oldest are written out."""
PAGE_SIZE = 50_000
_SPILL = 50_000
_COLUMNS = ", ".join(COLUMNS)


@contextmanager
def _no_gc() -> Iterator[None]:
    """The rebuild allocates rows by the hundred thousand and no cycles: the cyclic garbage
    collector would rescan the growing state over and over."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_INFINITY = {datetime.max: (2**63 - 1,), datetime.min: (-(2**63),)}  # noqa: DTZ901 - naive, as asyncpg


def _timestamptz(value: datetime | tuple[int]) -> tuple[int]:
    """A timestamptz as asyncpg's tuple format: (microseconds since 2000-01-01 UTC,), the
    same value asyncpg's own encoder computes, at half its cost (it converts every value to
    UTC first). Values read back through this codec are such tuples already."""
    if type(value) is tuple:
        return value
    assert isinstance(value, datetime)  # noqa: S101 - what asyncpg accepts too
    if value.tzinfo is None:  # asyncpg reads naive values as local time; infinity as itself
        if value in _INFINITY:
            return _INFINITY[value]
        value = value.astimezone(UTC)
    return ((value - _EPOCH) // _MICROSECOND,)


@asynccontextmanager
async def _fast_timestamps(conn: Connection) -> AsyncIterator[None]:
    await conn.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_timestamptz,
        decoder=tuple,
        format="tuple",
    )
    try:
        yield
    finally:
        await conn.reset_type_codec("timestamptz", schema="pg_catalog")


class _Writer:
    """COPYs into the rebuild transaction's connection, one at a time, behind the fold."""

    def __init__(self, conn: Connection, table: str) -> None:
        self.conn = conn
        self.table = table
        self.queue: asyncio.Queue[tuple[str, list[Any]] | None] = asyncio.Queue(maxsize=2)
        self.task = asyncio.ensure_future(self._run())
        self.set_aside = 0

    async def _run(self) -> None:
        while (job := await self.queue.get()) is not None:
            kind, records = job
            if kind == "rows":
                await self.conn.copy_records_to_table(self.table, records=records, columns=COLUMNS)
            else:
                await self.conn.copy_records_to_table("_listings_set_aside", records=records)

    async def put(self, kind: str, records: list[Any]) -> None:
        """Queue a COPY; waits while two are queued; raises the error of a failed one."""
        await self._put((kind, records))

    async def _put(self, job: tuple[str, list[Any]] | None) -> None:
        put = asyncio.ensure_future(self.queue.put(job))
        await asyncio.wait([put, self.task], return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
        if self.task.done():
            await self.task  # raises its error; it ends only after `close`

    async def close(self) -> None:
        """Wait for the queued COPYs."""
        await self._put(None)
        await self.task

    async def abandon(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


def _fold_page(page: list[asyncpg.Record], rows: dict[UUID, Any], aside: list[tuple[int]]) -> None:
    """Fold a page of (position, listing id, topic, state) into `rows`; the positions of
    events whose listing is not in `rows` go to `aside`, undecoded."""
    registrations, decode = _REGISTRATIONS, ev.decode_payload
    for position, listing_id, topic, state in page:
        if topic in registrations:
            rows[listing_id] = _new_row(listing_id, position, _decode_registration(state))
            continue
        row = rows.get(listing_id)
        if row is None:
            aside.append((position,))
            continue
        if type(row) is tuple:
            row = rows[listing_id] = list(row)
        _apply(row, position, decode(topic, state))


async def _fold_log(
    reader: Connection,
    writer: _Writer,
    upto: int,
    *,
    memory_rows: int,
    page_size: int,
    progress: Callable[[int], None] | None,
) -> int:
    """Phase 1: fold the log up to `upto` into `writer`'s table; returns the events read."""
    rows: dict[UUID, Any] = {}
    aside: list[tuple[int]] = []
    read = 0
    async for page in log_pages(reader, upto, list(_LISTING_TOPICS), page_size):
        _fold_page(page, rows, aside)
        read += len(page)
        if len(rows) > memory_rows:
            oldest = list(islice(rows, len(rows) - memory_rows // 2))
            await writer.put("rows", [rows.pop(key) for key in oldest])
        if len(aside) >= _SPILL:
            writer.set_aside += len(aside)
            await writer.put("aside", aside)
            aside = []
        if progress is not None:
            progress(page[-1][0])
    if rows:
        await writer.put("rows", list(rows.values()))
    if aside:
        writer.set_aside += len(aside)
        await writer.put("aside", aside)
    return read


async def _fold_set_aside(conn: Connection, table: str, page_size: int) -> None:
    """Phase 2: fold the events set aside into the rows they belong to, listing by listing."""
    await conn.execute(
        f"DECLARE _listings_tail NO SCROLL CURSOR FOR SELECT {_COLUMNS}, g.positions, g.topics, "
        "g.states FROM (SELECT e.originator_id AS id, "
        "array_agg(e.notification_id ORDER BY e.notification_id) AS positions, "
        "array_agg(e.topic ORDER BY e.notification_id) AS topics, "
        "array_agg(e.state ORDER BY e.notification_id) AS states "
        f"FROM _listings_set_aside a JOIN {EVENTS_TABLE} e ON e.notification_id = a.position "
        f"GROUP BY e.originator_id) g JOIN {table} l ON l.listing_id = g.id"
    )
    await conn.execute(
        f"CREATE TEMP TABLE _listings_patch (LIKE {table}) ON COMMIT DROP",
    )
    width = len(COLUMNS)
    while records := await conn.fetch(f"FETCH {page_size} FROM _listings_tail"):
        patched = []
        for record in records:
            row = list(record[:width])
            for position, topic, state in zip(*record[width:], strict=True):
                if topic in _REGISTRATIONS:
                    row = list(_new_row(row[0], position, _decode_registration(state)))
                else:
                    _apply(row, position, ev.decode_payload(topic, state))
            patched.append(row)
        await conn.copy_records_to_table("_listings_patch", records=patched, columns=COLUMNS)
    await conn.execute("CLOSE _listings_tail")
    await conn.execute(
        f"DELETE FROM {table} l USING _listings_patch p WHERE l.listing_id = p.listing_id"
    )
    await conn.execute(f"INSERT INTO {table} ({_COLUMNS}) SELECT {_COLUMNS} FROM _listings_patch")


async def rebuild_listings(
    pool: asyncpg.Pool,
    upto: int,
    *,
    name: str = "listings",
    memory_rows: int = MEMORY_ROWS,
    page_size: int = PAGE_SIZE,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Rebuild `listings` from the log up to position `upto` and record `upto` as the
    position of projection `name`, in one transaction; returns the listing events read.

    The caller holds the projection's advisory lock (no live runner applies meanwhile) and
    chooses `upto` at most the log's head: ids follow commit order, so every event up to it
    is committed and the live runner continues after it."""
    async with (
        pool.acquire() as reader,
        pool.acquire() as conn,
        _fast_timestamps(conn),
        conn.transaction(),
    ):
        with _no_gc():
            return await _rebuild(
                reader,
                conn,
                upto,
                name=name,
                memory_rows=memory_rows,
                page_size=page_size,
                progress=progress,
            )


async def _rebuild(
    reader: Connection,
    conn: Connection,
    upto: int,
    *,
    name: str,
    memory_rows: int,
    page_size: int,
    progress: Callable[[int], None] | None,
) -> int:
    table = await fresh_table(conn, "listings")
    await conn.execute(
        "CREATE TEMP TABLE _listings_set_aside (position bigint NOT NULL) ON COMMIT DROP"
    )
    writer = _Writer(conn, table)
    try:
        read = await _fold_log(
            reader,
            writer,
            upto,
            memory_rows=max(memory_rows, 2),
            page_size=page_size,
            progress=progress,
        )
        await writer.close()
    except BaseException:
        await writer.abandon()
        raise
    if writer.set_aside:
        await _fold_set_aside(conn, table, page_size)
    await swap_in(conn, "listings", table)
    await conn.execute(
        "UPDATE projection_positions SET position = $2, updated_at = now() WHERE name = $1",
        name,
        upto,
    )
    return read
