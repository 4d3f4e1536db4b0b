"""The projection runner against a real PostgreSQL: what a batch costs in statements, and
that a runner whose connection dies takes its lock again and goes on where it stopped; it and
the check index's follower retry a batch that fails, and skip nothing; the tree head signer
retries a signature that fails."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
from relay_support import wait_until
from test_replay import TAX, fx_hub, new_listing  # noqa: F401  (fx_hub: the `hub` fixture)

from hub.audit import heads as audit_heads
from projections import _runner, checkindex_follower
from projections._runner import SESSION_SETUP, ProjectionRunner
from projections.checkindex import CheckIndex
from projections.checkindex_follower import IndexFollower
from projections.listings import ListingsProjection
from projections.replay import replay_digest, snapshot


@contextlib.asynccontextmanager
async def running(
    run: Callable[[asyncio.Event], Awaitable[None]],
) -> AsyncIterator[asyncio.Task[None]]:
    """`run(stop)` as a task for the block; stopped at its end."""
    stop = asyncio.Event()
    task = asyncio.create_task(run(stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def register(hub, numbers: range) -> None:
    await asyncio.gather(*(hub.listings.register(TAX, new_listing(n)) for n in numbers))


async def head(hub) -> int:
    async with hub.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT max(notification_id) FROM credit_events"))


async def logged() -> None:
    """Let the query logger's callbacks (scheduled on the loop) run."""
    await asyncio.sleep(0.05)


async def test_a_batch_costs_one_read_and_a_transaction_and_nothing_new_one_read(hub, db):
    runner = hub.runners["listings"]
    await register(hub, range(3))
    conn = await asyncpg.connect(db.url, server_settings={"search_path": db.schema})
    statements: list[str] = []
    conn.add_query_logger(lambda record: statements.append(record.query))
    try:
        await conn.execute(SESSION_SETUP)
        await logged()
        statements.clear()
        assert await runner.catch_up(conn=conn) == 3
        await logged()
        # one read (a short batch is the end of the log: no second, empty read), then the
        # batch and its position in one transaction
        reads = [s for s in statements if "LEFT JOIN LATERAL" in s]
        assert len(reads) == 1
        assert statements[0] == reads[0]
        assert statements[1].startswith("BEGIN")
        assert statements[-2].startswith("UPDATE projection_positions")
        assert statements[-1].startswith("COMMIT")
        statements.clear()
        assert await runner.catch_up(conn=conn) == 0
        await logged()
        assert statements == reads  # nothing new: one round trip, no transaction
        assert runner.position == await head(hub)
    finally:
        await conn.close()


async def test_full_batches_are_read_until_a_short_one(hub):
    runner = hub.runners["listings"]
    runner.batch_size = 4
    await register(hub, range(10))
    applied: list[int] = []
    assert await runner.catch_up(progress=applied.append) == 10
    assert applied == [4, 4, 2]
    assert runner.position == await head(hub)


async def test_a_runner_whose_connection_is_killed_takes_its_lock_again(hub, db):
    runner = hub.runners["listings"]
    async with running(lambda stop: runner.run(stop, poll_seconds=0.2)) as task:
        await register(hub, range(5))
        runner.wakeup.set()
        await caught_up(runner, await head(hub))
        key = zlib.crc32(f"projection:{db.schema}:listings".encode())
        async with hub.pool.acquire() as conn:
            killed = await conn.fetchval(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND objid = $1::bigint::oid AND granted",
                key,
            )
        assert killed is True
        await register(hub, range(5, 12))
        runner.wakeup.set()
        await caught_up(runner, await head(hub))
        assert not task.done()
        async with hub.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM listings") == 12
            holders = await conn.fetchval(
                "SELECT count(*) FROM pg_locks "
                "WHERE locktype = 'advisory' AND objid = $1::bigint::oid AND granted",
                key,
            )
            assert holders == 1  # the lock is held again, once
            position, live = await snapshot(conn, ListingsProjection())
        assert await replay_digest(db.url, db.schema, ListingsProjection(), position) == live


async def caught_up(runner, position: int) -> None:
    async def reached() -> bool:
        return runner.position >= position

    await wait_until(reached, 15, f"position {position}")


class Flaky:
    """A projection whose first batch fails once, as a bug or a bad event would make it."""

    name = "flaky"

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def setup(self, conn) -> None:
        pass

    async def reset(self, conn) -> None:
        pass

    async def apply(self, _conn, events) -> None:
        self.calls.append([e.position for e in events])
        if len(self.calls) == 1:
            raise ValueError("cannot apply this batch")


class Recorder:
    """Stands in for a module's structlog logger (whose configuration is cached by then)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def __getattr__(self, level: str):
        return lambda event, **fields: self.events.append((event, fields))


async def test_a_failing_batch_is_logged_and_tried_again_not_skipped(hub, monkeypatch):
    projection = Flaky()
    runner = ProjectionRunner(hub.pool, projection)
    await runner.setup()
    await register(hub, range(4))
    monkeypatch.setattr(_runner, "log", recorded := Recorder())
    async with running(lambda stop: runner.run(stop, poll_seconds=0.05)):
        await caught_up(runner, await head(hub))
    assert len(projection.calls) == 2
    assert projection.calls[0] == projection.calls[1]  # the same batch again, nothing skipped
    failed = [fields for event, fields in recorded.events if event == "projection_failed"]
    assert len(failed) == 1
    assert failed[0]["projection"] == "flaky"


async def test_the_check_index_follower_retries_a_failing_batch(hub, monkeypatch):
    follower = IndexFollower(hub.pool, CheckIndex())
    await register(hub, range(3))
    apply, calls = follower.apply, []

    async def flaky(conn, events):
        calls.append([e.position for e in events])
        if len(calls) == 1:
            raise ValueError("cannot apply this batch")
        await apply(conn, events)

    follower.apply = flaky  # type: ignore[method-assign]
    monkeypatch.setattr(checkindex_follower, "log", recorded := Recorder())
    async with running(lambda stop: follower.run(stop, poll_seconds=0.05)):
        await caught_up(follower, await head(hub))
    assert calls[0] == calls[1]  # the same batch again
    assert follower.index.listings == 3
    assert [event for event, _ in recorded.events].count("check_index_failed") == 1


async def test_the_tree_head_signer_retries_a_failing_signature(hub, monkeypatch):
    await register(hub, range(3))
    await hub.runners["audit"].catch_up()
    heads = hub.audit.heads
    heads.every_events = 1
    sign, calls = heads.sign, []

    async def flaky(conn):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("cannot sign now")
        return await sign(conn)

    monkeypatch.setattr(heads, "sign", flaky)
    monkeypatch.setattr(audit_heads, "log", recorded := Recorder())
    async with running(lambda stop: heads.run(stop, poll_seconds=0.05)):

        async def signed() -> bool:
            async with hub.pool.acquire() as conn:
                latest = await heads.latest(conn)
                return latest is not None and latest.tree_size == await heads.store.tree_size(conn)

        await wait_until(signed, 15, "a signed head of the whole tree")
    assert len(calls) >= 2
    assert [event for event, _ in recorded.events].count("tree_head_failed") == 1
