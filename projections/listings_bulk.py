"""Rebuilding the listings read model from position 0 in bulk, for `hub replay listings`.

The result is the table `ListingsProjection` builds event by event (tests compare digests),
made the way a bulk load is cheap:

1. A fresh table without indexes is created and committed (`listings__rebuild`).
2. The listings are split by id among `workers` processes (this one and spawned ones): the
   fold is CPU bound. Each reads the log in pages of positions, its listings' events only, one
   page ahead, and folds them into rows in memory, a listing's events collapsing into one
   row. At most `memory_rows` rows stay in memory: beyond, the oldest are written out by
   binary COPY while the fold goes on. An event whose listing is no longer in memory (written
   out, or never registered) is not decoded: its position is set aside in a temporary table.
   Then the events set aside are read back grouped by listing, in one sorted query joined
   with the rows written out, and each listing's row is folded on and replaced. Each process
   does this in one transaction of its own.
3. The live table's indexes are built on the fresh one, each once over all rows, two at a
   time; then one transaction drops the live table, gives the fresh one its constraints, its
   name and the index names, and records the position, so the live runner continues after it.
   Readers of `listings` see the old rows until that commit; a failure leaves them in place
   and drops the fresh table.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import msgspec

from projections._runner import EVENTS_TABLE, Connection
from projections.listings import (
    _LISTING_TOPICS,
    _REGISTRATIONS,
    COLUMNS,
    _apply,
    _decode_registration,
    _new_row,
)
from projections.replay import build_indexes, fresh_table, log_pages, swap_in
from schemas import events as ev

MEMORY_ROWS = 200_000
"""Rows a process keeps in memory by default (its peak is about 0.5 GB: rows of listings take
about 1 kB each in Python, and up to half as many again wait for their COPY)."""
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
    try:
        return ((value - _EPOCH) // _MICROSECOND,)  # type: ignore[operator]
    except TypeError:  # a tuple, or a naive datetime: asyncpg reads those as local time
        if type(value) is tuple:
            return value
        assert isinstance(value, datetime)  # noqa: S101 - what asyncpg accepts too
        if value in _INFINITY:
            return _INFINITY[value]
        return ((value.astimezone(UTC) - _EPOCH) // _MICROSECOND,)


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
        self.queue: asyncio.Queue[tuple[str, list[Any]] | None] = asyncio.Queue(maxsize=1)
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
    partition: tuple[int, int],
    memory_rows: int,
    page_size: int,
    progress: Callable[[int], None] | None,
) -> int:
    """Phase 1: fold the log up to `upto` into `writer`'s table; returns the events read."""
    rows: dict[UUID, Any] = {}
    aside: list[tuple[int]] = []
    read = 0
    async for page in log_pages(reader, upto, list(_LISTING_TOPICS), page_size, partition):
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
    """Phase 2: fold the events set aside into the rows they belong to, listing by listing;
    each row is replaced (found by its ctid: the table has no index yet). PostgreSQL cursors
    are insensitive: the rows replaced do not come back through the open cursor."""
    await conn.execute("SET LOCAL work_mem = '256MB'")  # group the events in memory
    await conn.execute(
        f"DECLARE _listings_tail NO SCROLL CURSOR FOR SELECT l.ctid, {_COLUMNS}, g.positions, "
        "g.topics, g.states FROM (SELECT e.originator_id AS id, "
        "array_agg(e.notification_id ORDER BY e.notification_id) AS positions, "
        "array_agg(e.topic ORDER BY e.notification_id) AS topics, "
        "array_agg(e.state ORDER BY e.notification_id) AS states "
        f"FROM _listings_set_aside a JOIN {EVENTS_TABLE} e ON e.notification_id = a.position "
        f"GROUP BY e.originator_id) g JOIN {table} l ON l.listing_id = g.id"
    )
    end = len(COLUMNS) + 1
    while records := await conn.fetch(f"FETCH {page_size} FROM _listings_tail"):
        patched = []
        for record in records:
            row = list(record[1:end])
            for position, topic, state in zip(*record[end:], strict=True):
                if topic in _REGISTRATIONS:
                    row = list(_new_row(row[0], position, _decode_registration(state)))
                else:
                    _apply(row, position, ev.decode_payload(topic, state))
            patched.append(row)
        stale = [record[0] for record in records]
        await conn.execute(f"DELETE FROM {table} WHERE ctid = ANY($1::tid[])", stale)
        await conn.copy_records_to_table(table, records=patched, columns=COLUMNS)
    await conn.execute("CLOSE _listings_tail")


async def _load_partition(
    reader: Connection,
    conn: Connection,
    table: str,
    upto: int,
    *,
    partition: tuple[int, int],
    memory_rows: int,
    page_size: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Phases 1 and 2 for the listings of one partition, in one transaction on `conn`."""
    async with _fast_timestamps(conn), conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE _listings_set_aside (position bigint NOT NULL) ON COMMIT DROP"
        )
        writer = _Writer(conn, table)
        try:
            read = await _fold_log(
                reader,
                writer,
                upto,
                partition=partition,
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
    return read


class _Job(NamedTuple):
    """What a worker process needs to load its partition (sent to it as JSON on stdin)."""

    dsn: str
    search_path: str
    table: str
    upto: int
    partition: tuple[int, int]
    memory_rows: int
    page_size: int


async def _partition_main(job: _Job) -> int:
    settings = {"search_path": job.search_path}
    reader = await asyncpg.connect(job.dsn, server_settings=settings)
    conn = await asyncpg.connect(job.dsn, server_settings=settings)
    try:
        with _no_gc():
            return await _load_partition(
                reader,
                conn,
                job.table,
                job.upto,
                partition=job.partition,
                memory_rows=job.memory_rows,
                page_size=job.page_size,
            )
    finally:
        await reader.close()
        await conn.close()


class _Outcome(msgspec.Struct):
    read: int = 0
    error: str | None = None


class _Worker:
    """A process loading one partition: `python -m projections.listings_bulk`, a fresh
    interpreter that imports only this module (not the caller's main module, as `spawn`
    would), reading its job on stdin and writing its outcome on stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, job: _Job) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            __spec__.name if __spec__ else "projections.listings_bulk",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None  # noqa: S101 - asked for above
        process.stdin.write(msgspec.json.encode(job))
        await process.stdin.drain()
        process.stdin.close()
        return cls(process)

    async def result(self) -> int:
        out, _ = await self.process.communicate()
        try:  # the last line: anything the worker logged to stdout comes before it
            outcome = msgspec.json.decode(out.rstrip().rpartition(b"\n")[2], type=_Outcome)
        except msgspec.DecodeError:
            outcome = _Outcome(error=f"worker exited with code {self.process.returncode}")
        if outcome.error is not None or self.process.returncode != 0:
            raise RebuildError(f"listings partition: {outcome.error}")
        return outcome.read

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


class RebuildError(RuntimeError):
    """A worker process of a bulk rebuild failed."""


def default_workers() -> int:
    """Processes for a bulk rebuild: the fold is CPU bound, PostgreSQL needs a core too."""
    return max(1, min(4, (os.cpu_count() or 1)))


async def rebuild_listings(
    pool: asyncpg.Pool,
    upto: int,
    *,
    name: str = "listings",
    dsn: str | None = None,
    workers: int = 1,
    memory_rows: int = MEMORY_ROWS,
    page_size: int = PAGE_SIZE,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Rebuild `listings` from the log up to position `upto` and record `upto` as the
    position of projection `name`; returns the listing events read.

    With `workers` > 1 (and the `dsn` to connect with, in the pool's search path), the
    listings are split by id among that many processes, this one included, each folding and
    loading its share with at most `memory_rows` rows in memory. The fresh table is swapped
    in, and the position recorded, in one transaction at the end; a failure leaves the live
    table as it was. The caller holds the projection's advisory lock (no live runner applies
    meanwhile) and chooses `upto` at most the log's head: ids follow commit order, so every
    event up to it is committed and the live runner continues after it."""
    workers = max(1, workers if dsn is not None else 1)
    async with pool.acquire() as conn:
        table = await fresh_table(conn, "listings")
        search_path = await conn.fetchval("SELECT current_setting('search_path')")
    others: list[_Worker] = []
    try:
        for k in range(1, workers if dsn is not None else 1):
            job = _Job(dsn or "", search_path, table, upto, (k, workers), memory_rows, page_size)
            others.append(await _Worker.start(job))
        async with pool.acquire() as reader, pool.acquire() as conn:
            with _no_gc():
                read = await _load_partition(
                    reader,
                    conn,
                    table,
                    upto,
                    partition=(0, workers),
                    memory_rows=memory_rows,
                    page_size=page_size,
                    progress=progress,
                )
        for worker in others:
            read += await worker.result()
        swap = await build_indexes(pool, "listings", table, parallel=workers)
        async with pool.acquire() as conn, conn.transaction():
            await swap_in(conn, swap)
            await conn.execute(
                "UPDATE projection_positions SET position = $2, updated_at = now() WHERE name = $1",
                name,
                upto,
            )
    except BaseException:
        for worker in others:
            await worker.stop()
        async with pool.acquire() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
        raise
    return read


def _worker_main() -> None:
    """The body of a worker process (see `_Worker`)."""
    job = msgspec.json.decode(sys.stdin.buffer.read(), type=_Job)
    try:
        outcome = _Outcome(read=asyncio.run(_partition_main(job)))
    except Exception as exc:
        outcome = _Outcome(error=f"{type(exc).__name__}: {exc}")
    sys.stdout.flush()
    sys.stdout.buffer.write(b"\n" + msgspec.json.encode(outcome) + b"\n")


if __name__ == "__main__":
    _worker_main()
