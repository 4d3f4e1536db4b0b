"""Signed tree heads: C2SP tlog-checkpoint notes over the audit tree, stored in `tree_heads`.

A head is signed after `tree_head_every_events` new events, or `tree_head_every_seconds` after
the first event not yet covered, whichever comes first; never twice for one size. One process
signs at a time (an advisory lock), the one that also wins the audit projection's work in a
single-process deployment. The audit projection calls `notify(size)` after each batch, before
its commit, so the signer re-reads the committed size until it has caught up with the news.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import asyncpg
import structlog

from hub.clock import Clock
from projections import Connection
from projections.merkle import MerkleStore, NoteSigner, sign_checkpoint
from schemas.audit import StoredTreeHead

log = structlog.get_logger(__name__)

DDL = """
CREATE TABLE IF NOT EXISTS tree_heads (
    tree_size bigint PRIMARY KEY,
    root_hash bytea NOT NULL,
    checkpoint text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_keys (
    key text PRIMARY KEY,
    origin text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)"""


def _head(row: asyncpg.Record) -> StoredTreeHead:
    return StoredTreeHead(row[0], bytes(row[1]).hex(), row[2], row[3])


class TreeHeads:
    def __init__(
        self,
        pool: asyncpg.Pool,
        signer: NoteSigner,
        clock: Clock,
        *,
        schema: str,
        every_events: int = 1000,
        every_seconds: float = 10.0,
    ) -> None:
        self.pool = pool
        self.signer = signer
        self.clock = clock
        self.store = MerkleStore(schema)
        self.lock_key = zlib.crc32(f"credit-hub:tree-heads:{schema}".encode())
        self.every_events = max(1, every_events)
        self.every_seconds = max(0.05, every_seconds)
        self.wakeup = asyncio.Event()
        self._announced = 0
        self.on_signed: Callable[[StoredTreeHead], Coroutine[Any, Any, object]] | None = None
        """Called (in the background) with every head this process signs: NATS publishing."""
        self._background: set[asyncio.Task[object]] = set()

    @property
    def origin(self) -> str:
        return self.signer.name

    def notify(self, size: int) -> None:
        """The audit projection reached `size` leaves (maybe not committed yet)."""
        self._announced = max(self._announced, size)
        self.wakeup.set()

    async def setup(self, conn: Connection) -> None:
        """Create the tables; record this signer's public key (export ships every key)."""
        await conn.execute(DDL)
        await conn.execute(
            "INSERT INTO audit_keys (key, origin) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            self.signer.verifier.key,
            self.origin,
        )

    async def latest(self, conn: Connection) -> StoredTreeHead | None:
        row = await conn.fetchrow(
            "SELECT tree_size, root_hash, checkpoint, created_at FROM tree_heads "
            "ORDER BY tree_size DESC LIMIT 1"
        )
        return None if row is None else _head(row)

    async def at_size(self, conn: Connection, tree_size: int) -> StoredTreeHead | None:
        row = await conn.fetchrow(
            "SELECT tree_size, root_hash, checkpoint, created_at FROM tree_heads "
            "WHERE tree_size = $1",
            tree_size,
        )
        return None if row is None else _head(row)

    async def sign(self, conn: Connection) -> StoredTreeHead:
        """Sign the tree as committed now (or return the head of that size if it exists)."""
        plain: asyncpg.Connection = conn  # type: ignore[assignment]
        async with conn.transaction(isolation="repeatable_read"):
            size = await self.store.tree_size(plain)
            existing = await self.at_size(conn, size)
            if existing is not None:
                return existing
            root = await self.store.get_root(plain, size)
        note = sign_checkpoint(self.signer, self.origin, size, root)
        head = StoredTreeHead(size, root.hex(), note, self.clock.now())
        await conn.execute(
            "INSERT INTO tree_heads (tree_size, root_hash, checkpoint, created_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (tree_size) DO NOTHING",
            size,
            root,
            note,
            head.created_at,
        )
        log.info("tree_head_signed", tree_size=size, root_hash=head.root_hash)
        if self.on_signed is not None:
            task: asyncio.Task[object] = asyncio.create_task(self.on_signed(head))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return head

    async def _due(self, conn: Connection, signed: int, since: float) -> bool:
        size = await self.store.tree_size(conn)
        if size <= signed:
            return False
        loop = asyncio.get_running_loop()
        return size - signed >= self.every_events or loop.time() - since >= self.every_seconds

    async def run(self, stop: asyncio.Event, *, poll_seconds: float = 1.0) -> None:
        """Sign heads as the tree grows, while holding the signer's lock, until `stop`."""
        loop = asyncio.get_running_loop()
        async with self.pool.acquire() as lock_conn:
            while not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_seconds * 5)
                if stop.is_set():
                    return
            try:
                await self._follow(stop, loop, min(poll_seconds, self.every_seconds))
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock($1)", self.lock_key)

    async def _follow(
        self, stop: asyncio.Event, loop: asyncio.AbstractEventLoop, poll: float
    ) -> None:
        signed, since, failures = -1, loop.time(), 0
        while not stop.is_set():
            self.wakeup.clear()
            try:
                async with self.pool.acquire() as conn:
                    if signed < 0:
                        latest = await self.latest(conn)
                        signed = latest.tree_size if latest else 0
                    if await self._due(conn, signed, since):
                        signed, since = (await self.sign(conn)).tree_size, loop.time()
                    size = await self.store.tree_size(conn)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("tree_head_retry", error=str(exc))
                await asyncio.sleep(poll)
                continue
            except Exception:  # not the database: say so and try again, never a dead signer
                failures += 1
                log.exception("tree_head_failed", signed=signed)
                await asyncio.sleep(min(30.0, poll * 2 ** min(failures, 6)))
                continue
            failures = 0
            if size <= signed:
                since = loop.time()  # the period counts from the first event not covered
            wait = poll
            if self._announced > size and self._announced - signed >= self.every_events:
                wait = 0.02  # the projection's batch is about to commit
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(stop, self.wakeup), wait)


async def public_keys(conn: Connection) -> list[str]:
    """Every verifier key that has signed this log's heads, oldest first."""
    rows = await conn.fetch("SELECT key FROM audit_keys ORDER BY created_at, key")
    return [r[0] for r in rows]


async def stream_heads(
    conn: Connection, *, upto: int | None = None, batch: int = 1000
) -> AsyncIterator[StoredTreeHead]:
    """Every stored head up to size `upto`, smallest first, read in batches."""
    after = -1
    while True:
        rows = await conn.fetch(
            "SELECT tree_size, root_hash, checkpoint, created_at FROM tree_heads "
            "WHERE tree_size > $1 AND tree_size <= $2 ORDER BY tree_size LIMIT $3",
            after,
            upto if upto is not None else 2**62,
            batch,
        )
        for row in rows:
            yield _head(row)
        if len(rows) < batch:
            return
        after = rows[-1][0]


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
