"""Helpers of bulk rebuilds (`projections.listings_bulk`): the cyclic garbage collector off,
and cheaper timestamptz and uuid codecs for reading the log and COPYing rows."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta

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


@asynccontextmanager
async def raw_uuids(conn: Connection) -> AsyncIterator[None]:
    """uuid as its 16 bytes on `conn`, read and written, meanwhile: cheaper to make and to
    hash than asyncpg's UUID objects (whose hash is computed anew each time)."""
    await conn.set_type_codec(
        "uuid", schema="pg_catalog", encoder=bytes, decoder=bytes, format="binary"
    )
    try:
        yield
    finally:
        await conn.reset_type_codec("uuid", schema="pg_catalog")
