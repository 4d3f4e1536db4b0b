"""The usage log's group commit: checks share a transaction, never each other's fate."""

from __future__ import annotations

import asyncio
from uuid import UUID

import asyncpg
import pytest

from hub.checks.usage import READ_GROUPED, UsageLog, grouped
from hub.errors import Unavailable


@pytest.fixture(name="usage")
async def fx_usage(db):
    def connect() -> asyncpg.Connection:
        return asyncpg.connect(db.url, server_settings={"search_path": db.schema})

    pool = await asyncpg.create_pool(db.url, server_settings={"search_path": db.schema})
    usage = UsageLog(pool, connect=connect, writers=1)
    await usage.setup()
    yield usage, pool
    await pool.close()


async def test_a_cancelled_check_leaves_the_others_of_its_group_answered(usage):
    """Five checks in one group; the request of one is cancelled while it waits (a client
    gone, a timeout). The four others are answered once the group is on disk, and every
    record, the cancelled one's too, reads back."""
    log, pool = usage
    stop = asyncio.Event()
    added = [log.add(b"record %d" % i, [("checks.by_agency", "a")]) for i in range(5)]
    waits = [asyncio.ensure_future(done) for _, done in added]
    writer = asyncio.create_task(log.run(stop))
    waits[2].cancel()
    results = await asyncio.gather(*waits, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    assert [r for i, r in enumerate(results) if i != 2] == [None] * 4
    async with pool.acquire() as conn:
        for i, (check_id, _) in enumerate(added):
            place = grouped(UUID(check_id))
            assert place is not None
            assert await conn.fetchval(READ_GROUPED, *place) == b"record %d" % i
    stop.set()
    await writer


async def test_a_group_that_cannot_be_written_refuses_each_check_with_its_own_error(db):
    async def connect() -> asyncpg.Connection:
        raise OSError("the database is gone")

    pool = await asyncpg.create_pool(db.url, server_settings={"search_path": db.schema})
    try:
        log = UsageLog(pool, connect=connect, writers=1)
        stop = asyncio.Event()
        stop.set()  # the writer takes what is pending, then ends
        added = [log.add(b"late", []) for _ in range(3)]
        await log.run(stop)
        errors = await asyncio.gather(*(done for _, done in added), return_exceptions=True)
    finally:
        await pool.close()
    assert all(isinstance(e, Unavailable) for e in errors), errors
    assert all("the database is gone" in str(e) for e in errors)
    assert len({id(e) for e in errors}) == len(errors)
