"""Rebuilding the listings read model from position 0 in bulk, for `hub replay listings`.

The result is the table `ListingsProjection` builds event by event (tests compare digests),
made the way a bulk load is cheap:

1. A fresh table without indexes is created and committed (`listings__rebuild`).
2. The listings are split by id among `workers` processes (this one and spawned ones): the
   fold is CPU bound. A listing's row is its registration (always its first event: the
   aggregate's creation, version 1) with its later events applied in log order. So each
   process reads its listings' events in two sequential scans of the events table (the
   heap's order, sorted where it matters), a page at a time, one page ahead: first the
   events that change a listing (objections, amendments, delistings, ...), kept undecoded
   by listing; then the registrations, a COPY a page, each row made (its changes applied)
   as COPY asks for it, and so encoded while still in the processor's cache. Only the
   changes stay in memory: when they outgrow `memory_rows`, the process halves the share it
   is reading (by a hash of the id) and folds the other half in a later round of the same
   two passes. The rows go in by one transaction per process.
3. The live table's indexes are built on the fresh one, each once over all rows, two at a
   time; then one transaction drops the live table, gives the fresh one its constraints, its
   name and the index names, and records the position, so the live runner continues after it.
   Readers of `listings` see the old rows until that commit; a failure leaves them in place
   and drops the fresh table.

Where the time goes (`ops.bench replay`, 1,000,000 events, 2 processes on 2 cores, the log in
the page cache): load about 4.2 s, index builds 1.0 s, for about 10.3 CPU seconds in all. The
Python processes take about 5 (receiving a record about 1.1 us, decoding a registration 1.4 us,
COPY encoding a row 1.7 us, of which 0.2 us for each of its three timestamps), PostgreSQL
about 5 (the four scans and sending the rows 1.8, taking in the COPY 1.2, the index builds 1.9:
`listings_subject` alone 0.9, its collation compared without abbreviated keys). Both cores are
busy throughout the load, so only less CPU work, wherever it is, makes it shorter. Measured
and not kept (alternating runs, medians):

- one pass instead of two, newest first along the position index, each listing's changes
  held only until its registration comes: 5.31 s against 5.32 s with the log in the page
  cache (0.2 s less PostgreSQL CPU, below the noise); with the log out of it, reading the
  heap backwards gets no read-ahead: a process's scan took 5.4 to 5.6 s against 1.7 to 1.9 s
  forwards.
- partitions by ranges of the id (`originator_id` between bounds) instead of the hash
  expression: 5.42 s against 5.27 s.
- reading in the primary key's order (each listing's events together): 2.7 s to read the log
  that way (a heap fetch per event, in random order) against 0.2 s for a sequential scan.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import asyncpg
import msgspec

from projections._bulk import fast_timestamps, no_gc, raw_uuids
from projections._child import environment, python
from projections._runner import Connection
from projections.listings import (
    _LISTING_TOPICS,
    _REGISTRATIONS,
    COLUMNS,
    _apply,
    _decode_registration,
    _new_row,
)
from projections.replay import PARTS, build_indexes, fresh_table, id_hash, log_scan, swap_in
from schemas import events as ev

MEMORY_ROWS = 200_000
"""Events of changes (all listing events but registrations) a process keeps in memory by
default, undecoded (a few hundred bytes each); the rows themselves are written out a page at
a time."""
PAGE_SIZE = 10_000
"""Events read at a time (and as many again on their way)."""
_CHANGES = [t for t in _LISTING_TOPICS if t not in _REGISTRATIONS]
_REGISTERED = sorted(_REGISTRATIONS)
_CHANGES_SHARE = 0.2
"""The part of a round's progress that the pass over the changes counts for."""

_Changes = dict[bytes, list[tuple[int, str, bytes]]]
"""Events of changes, (position, topic, state) in log order, by listing id (its bytes)."""


class _Share:
    """The listings a process folds, as partitions (k, n) of `id_hash`: the one it folds now
    and those it has put off; and how much of its share is folded, for the progress shown
    (as a position up to `upto`)."""

    def __init__(self, partition: tuple[int, int], upto: int) -> None:
        self.current = partition
        self.later: list[tuple[int, int]] = []
        self.upto = upto
        self._whole = partition[1]
        self._done = 0.0

    def halve(self) -> bool:
        """Fold only half of the current partition now, the other half later; False when
        it cannot be split further."""
        k, n = self.current
        if 2 * n > PARTS:
            return False
        self.current = (k, 2 * n)
        self.later.append((k + n, 2 * n))
        return True

    def has(self, listing_id: bytes) -> bool:
        k, n = self.current
        return id_hash(listing_id) % n == k

    def next(self) -> bool:
        """The current partition is folded: go on with one put off; False when none is."""
        self._done += self._whole / self.current[1]
        if not self.later:
            return False
        self.current = self.later.pop()
        return True

    def reached(self, part: float) -> int:
        """The position to show with `part` (0 to 1) of the current partition folded."""
        return int(self.upto * min(1.0, self._done + part * self._whole / self.current[1]))


async def _read_changes(
    reader: Connection,
    share: _Share,
    *,
    memory_rows: int,
    page_size: int,
    progress: Callable[[int], None] | None,
) -> _Changes:
    """Pass 1: the events of changes of the current partition, by listing; the partition is
    halved (the changes read of the other half dropped) while they outgrow `memory_rows`."""
    changes: _Changes = {}
    held = 0
    halved = False
    async for reached, page in log_scan(reader, share.upto, _CHANGES, page_size, share.current):
        for position, listing_id, topic, state in page:
            if halved and not share.has(listing_id):  # in the partition before halving
                continue
            events = changes.get(listing_id)
            if events is None:
                changes[listing_id] = [(position, topic, state)]
            else:
                events.append((position, topic, state))
            held += 1
        while held > memory_rows and share.halve():
            halved = True
            changes = {key: events for key, events in changes.items() if share.has(key)}
            held = sum(map(len, changes.values()))
        if progress is not None:
            progress(share.reached(_CHANGES_SHARE * reached / share.upto))
    return changes


def _rows(page: list[asyncpg.Record], changes: _Changes) -> Iterator[Any]:
    """The rows of a page of registrations, each made from its registration with its
    changes applied (and dropped from `changes`) when COPY asks for it: COPY encodes it while
    it is still in the processor's cache."""
    decode, decode_change = _decode_registration, ev.decode_payload
    for position, listing_id, _, state in page:
        row = _new_row(listing_id, position, decode(state))
        events = changes.pop(listing_id, None) if changes else None
        if events is None:
            yield row
            continue
        changed = list(row)
        if len(events) > 1:
            events.sort()  # read in the heap's order: about, not exactly, the log's
        for at, topic, change in events:
            if at > position:
                _apply(changed, at, decode_change(topic, change))
        yield changed


async def _fold_log(
    reader: Connection,
    conn: Connection,
    table: str,
    upto: int,
    *,
    partition: tuple[int, int],
    memory_rows: int,
    page_size: int,
    progress: Callable[[int], None] | None,
) -> int:
    """Fold the log up to `upto` into `table` on `conn`, round by round, a COPY a page;
    returns the events read."""
    share = _Share(partition, upto)
    read = 0
    while True:
        changes = await _read_changes(
            reader, share, memory_rows=memory_rows, page_size=page_size, progress=progress
        )
        read += sum(map(len, changes.values()))
        # Pass 2: the registrations of the partition, made into rows
        async for reached, page in log_scan(reader, upto, _REGISTERED, page_size, share.current):
            read += len(page)
            await conn.copy_records_to_table(table, records=_rows(page, changes), columns=COLUMNS)
            if progress is not None:
                progress(share.reached(_CHANGES_SHARE + (1 - _CHANGES_SHARE) * reached / upto))
        if not share.next():
            return read


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
    """Fold and load the listings of one partition, in one transaction on `conn`."""
    async with raw_uuids(reader), raw_uuids(conn), fast_timestamps(conn), conn.transaction():
        return await _fold_log(
            reader,
            conn,
            table,
            upto,
            partition=partition,
            memory_rows=max(memory_rows, 1),
            page_size=page_size,
            progress=progress,
        )


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


class _Clock:
    """Seconds between laps, into `timings` (when given)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = now - self.last
        self.last = now


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
    timings: dict[str, float] | None = None,
) -> int:
    """Rebuild `listings` from the log up to position `upto` and record `upto` as the
    position of projection `name`; returns the listing events read.

    With `workers` > 1 (and the `dsn` to connect with, in the pool's search path), the
    listings are split by id among that many processes, this one included, each folding and
    loading its share with at most `memory_rows` events of changes in memory. The fresh
    table is swapped in, and the position recorded, in one transaction at the end; a
    failure leaves the live table as it was. The caller holds the projection's advisory
    lock (no live runner applies meanwhile) and chooses `upto` at most the log's head: ids
    follow commit order, so every event up to it is committed and the live runner continues
    after it. `timings`, when given, receives the seconds of each step: `load`, `indexes`
    and `swap`."""
    workers = max(1, workers if dsn is not None else 1)
    clock = _Clock(timings)
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
        clock.lap("load")
        swap = await build_indexes(pool, "listings", table, parallel=workers)
        clock.lap("indexes")
        async with pool.acquire() as conn, conn.transaction():
            await swap_in(conn, swap)
            await conn.execute(
                "UPDATE projection_positions SET position = $2, updated_at = now() WHERE name = $1",
                name,
                upto,
            )
        clock.lap("swap")
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
