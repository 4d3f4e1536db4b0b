"""Helpers of bulk rebuilds (`projections.listings_bulk`): the cyclic garbage collector off,
a cheaper timestamptz encoding for COPY, and COPYs queued behind the fold."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from projections._runner import Connection


@contextmanager
def no_gc() -> Iterator[None]:
    """A rebuild allocates rows by the hundred thousand and no cycles: the cyclic garbage
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
async def fast_timestamps(conn: Connection) -> AsyncIterator[None]:
    """timestamptz through `_timestamptz` on `conn` (read back as such tuples), meanwhile."""
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


_Copy = tuple[str, list[Any], Sequence[str] | None]


class CopyWriter:
    """COPYs on one connection, one at a time, behind the caller: at most one waits."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: asyncio.Queue[_Copy | None] = asyncio.Queue(maxsize=1)
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while (job := await self.queue.get()) is not None:
            table, records, columns = job
            await self.conn.copy_records_to_table(table, records=records, columns=columns)

    async def put(self, table: str, records: list[Any], columns: Sequence[str] | None) -> None:
        """Queue a COPY; waits while one is queued; raises the error of a failed one."""
        await self._put((table, records, columns))

    async def _put(self, job: _Copy | None) -> None:
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
