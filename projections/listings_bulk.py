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
import os
import sys
from collections.abc import Callable
from itertools import islice
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import msgspec

from projections._bulk import CopyWriter, fast_timestamps, no_gc
from projections._child import environment, python
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
    writer: CopyWriter,
    table: str,
    upto: int,
    *,
    partition: tuple[int, int],
    memory_rows: int,
    page_size: int,
    progress: Callable[[int], None] | None,
) -> tuple[int, int]:
    """Phase 1: fold the log up to `upto` into `table` through `writer`; returns the events
    read and the events set aside."""
    rows: dict[UUID, Any] = {}
    aside: list[tuple[int]] = []
    read = set_aside = 0
    async for page in log_pages(reader, upto, list(_LISTING_TOPICS), page_size, partition):
        _fold_page(page, rows, aside)
        read += len(page)
        if len(rows) > memory_rows:
            oldest = list(islice(rows, len(rows) - memory_rows // 2))
            await writer.put(table, [rows.pop(key) for key in oldest], COLUMNS)
        if len(aside) >= _SPILL:
            set_aside += len(aside)
            await writer.put("_listings_set_aside", aside, None)
            aside = []
        if progress is not None:
            progress(page[-1][0])
    if rows:
        await writer.put(table, list(rows.values()), COLUMNS)
    if aside:
        set_aside += len(aside)
        await writer.put("_listings_set_aside", aside, None)
    return read, set_aside


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
    async with fast_timestamps(conn), conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE _listings_set_aside (position bigint NOT NULL) ON COMMIT DROP"
        )
        writer = CopyWriter(conn)
        try:
            read, set_aside = await _fold_log(
                reader,
                writer,
                table,
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
        if set_aside:
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
        with no_gc():
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
            *python("-m", __spec__.name if __spec__ else "projections.listings_bulk"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=environment(),
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
            with no_gc():
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
