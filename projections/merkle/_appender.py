"""Appending leaves to the stored tree, inside the caller's transaction.

The appender keeps the tree's right edge in memory (`Edge`), so an append hashes the new
leaves and the nodes they complete, each node once (about one node hash per leaf), and writes
the touched leaf blocks and new nodes in the caller's transaction: the tree commits or rolls
back with the caller's own rows and position.

A batch is written in rounds of up to 16,384 leaves, so that PostgreSQL writes while this
process hashes: a round's leaves are hashed, its leaf blocks (the bulk of the rows, packed into
one bytea) sent, and only then its nodes hashed (given an `executor`, in another process), to
go with the next round's blocks or, after the last round, in a small write of their own. A
batch of a round or less is thus two statements besides the size check.

Each append compares the stored tree size with its own (fetched while the first round's leaves
are hashed, as leaf hashes do not depend on the position): after a rollback (or if another
process appended) it reloads its state from the rows, so it never writes past a gap. Two
concurrent writers cannot fork the tree either: a rewritten block must extend the stored one
and nodes are never overwritten; the loser gets a StoreError.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any

import asyncpg
import structlog

from projections.merkle import _hashing as h
from projections.merkle._edge import (
    BLOCK_BYTES,
    BLOCK_LEVEL,
    BLOCK_SIZE,
    Edge,
    Rows,
    block_roots,
    completed_blocks,
    pack,
)
from projections.merkle._errors import StoreError
from projections.merkle._store import Connection, MerkleStore, quote_schema

log = structlog.get_logger(__name__)

ROUND = 64 * BLOCK_SIZE
"""Leaves per write of leaf blocks (512 KiB): a batch of that size or less has its blocks
written in one statement and its nodes in a second one."""


class MerkleAppender:
    """The single writer of one schema's tree. Build it with `await MerkleAppender.load()`.

    `executor` (say a one-worker ProcessPoolExecutor, owned and shut down by the caller)
    takes the block hashing, about half of the CPU, off this process.
    """

    def __init__(self, schema: str, *, executor: Executor | None = None) -> None:
        self.store = MerkleStore(schema)
        self.executor = executor
        self._edge = Edge()
        self._lock = asyncio.Lock()  # one append at a time, even from several tasks
        # The leaf blocks of a round, packed here for the write (not in a fresh bytes object
        # per round: at 512 KiB that costs a page fault per 4 KiB).
        self._buffer = bytearray(ROUND * h.HASH_SIZE + BLOCK_BYTES)
        s = quote_schema(schema)
        # The blocks arrive as one string of hashes ($2, from block $1 on), split here: one
        # bytea costs the client a copy, an array of them far more (measured: 0.09 against
        # 0.49 ms of CPU for 320 KiB).
        self._write_sql = (
            f"WITH b AS (INSERT INTO {s}.merkle_leaf_blocks AS t (block, hashes) "
            f"SELECT $1::bigint + g, substr($2::bytea, g * {BLOCK_BYTES} + 1, {BLOCK_BYTES}) "
            f"FROM generate_series(0, (octet_length($2::bytea) + {BLOCK_BYTES - 1}) "
            f"/ {BLOCK_BYTES} - 1) AS g "
            f"ON CONFLICT (block) DO UPDATE SET hashes = EXCLUDED.hashes "
            f"WHERE substr(EXCLUDED.hashes, 1, octet_length(t.hashes)) = t.hashes RETURNING 1), "
            f"n AS (INSERT INTO {s}.merkle_nodes (level, idx, hash) "
            f"SELECT * FROM unnest($3::smallint[], $4::bigint[], $5::bytea[]) RETURNING 1) "
            f"SELECT (SELECT count(*) FROM b)"
        )

    @classmethod
    async def load(
        cls, conn: Connection, schema: str, *, executor: Executor | None = None
    ) -> MerkleAppender:
        appender = cls(schema, executor=executor)
        await appender.reload(conn)
        return appender

    @property
    def size(self) -> int:
        """Leaves appended so far (as of this appender's last append or reload)."""
        return self._edge.size

    def root(self) -> bytes:
        """The root at `size`, from memory."""
        return self._edge.root()

    async def reload(self, conn: Connection) -> None:
        """Rebuild the in-memory right edge from the stored rows."""
        size = await self.store.tree_size(conn)
        full = size - size % BLOCK_SIZE
        frontier_nodes = h.subtree_nodes(0, full)
        needed = set(frontier_nodes)
        if size % BLOCK_SIZE:
            needed.add((0, full))
        source = await self.store.nodes(conn, needed)
        frontier = [source(level, index) for level, index in frontier_nodes]
        self._edge = Edge(size, frontier, [source(0, i) for i in range(full, size)])

    async def append(self, conn: Connection, entries: Sequence[bytes]) -> int:
        """Append entries (leaf i = the i-th entry ever appended); return the new size."""
        return await self._append(conn, entries, hashed=False)

    async def append_leaf_hashes(self, conn: Connection, leaf_hashes: Sequence[bytes]) -> int:
        """Append leaves given as their leaf hashes (SHA-256 of 0x00 || entry)."""
        if any(len(leaf) != h.HASH_SIZE for leaf in leaf_hashes):
            raise StoreError("leaf hashes are 32 bytes")
        return await self._append(conn, leaf_hashes, hashed=True)

    async def _append(self, conn: Connection, items: Sequence[bytes], *, hashed: bool) -> int:
        async with self._lock:
            return await self._append_locked(conn, items, hashed=hashed)

    async def _append_locked(
        self, conn: Connection, items: Sequence[bytes], *, hashed: bool
    ) -> int:
        if not conn.is_in_transaction():
            raise StoreError("append inside the transaction that records your position")
        if not items:
            return self.size
        # The stored size is fetched while the first round is hashed: leaf hashes do not depend
        # on where the leaves go.
        stored: asyncio.Future[int] | None = asyncio.ensure_future(self.store.tree_size(conn))
        await asyncio.sleep(0)  # send it
        edge = self._edge
        nodes = Rows()  # hashed, not yet sent
        write: asyncio.Future[None] | None = None
        roots: asyncio.Future[bytes] | None = None
        try:
            position = 0
            while position < len(items):
                # Rounds end on block boundaries, so a block is written once per round.
                end = min(len(items), position + ROUND - edge.size % ROUND)
                leaves = items[position:end] if hashed else h.leaf_hashes(items[position:end])
                if stored is not None:
                    edge = await self._check_size(conn, await stored)
                    stored = None
                position = end
                roots = self._block_roots(edge.tail, leaves)
                if write is not None:
                    await write  # the buffer is free again
                rows = Rows(edge.size >> BLOCK_LEVEL, pack([edge.tail, leaves], self._buffer))
                rows.take_nodes(nodes)
                write = asyncio.ensure_future(self._write(conn, rows))
                await asyncio.sleep(0)  # send it: PostgreSQL writes the blocks while we hash
                nodes = edge.grow(leaves, None if roots is None else await roots)
                roots = None
            if write is not None:
                await write
            if nodes.levels:  # the last round's nodes
                write = asyncio.ensure_future(self._write(conn, nodes))
                await write
        except BaseException:
            await self._abandon(stored, write, roots)
            raise
        self._edge = edge
        return edge.size

    async def _check_size(self, conn: Connection, stored: int) -> Edge:
        """A copy of the edge to grow, reloaded first if the stored tree is not ours."""
        if stored != self.size:
            log.warning("merkle_reload", schema=self.store.schema, had=self.size, stored=stored)
            await self.reload(conn)
        return self._edge.copy()

    def _block_roots(
        self, tail: Sequence[bytes], leaves: Sequence[bytes]
    ) -> asyncio.Future[bytes] | None:
        if self.executor is None:
            return None
        data = completed_blocks(tail, leaves)
        if not data:
            return None
        return asyncio.get_running_loop().run_in_executor(self.executor, block_roots, data)

    @staticmethod
    async def _abandon(*tasks: asyncio.Future[Any] | None) -> None:
        """After a failure: let a running query finish, drop the hashing not awaited yet."""
        for task in tasks:
            if task is None:
                continue
            if not isinstance(task, asyncio.Task):  # hashing in the executor
                task.cancel()
            if not task.done():  # a query: the connection is usable once it is through
                await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved, so nothing is logged: the caller gets the first

    async def _write(self, conn: Connection, rows: Rows) -> None:
        try:
            written = await conn.fetchval(
                self._write_sql,
                rows.first_block,
                rows.leaves,
                rows.levels,
                rows.indexes,
                rows.hashes,
            )
        except asyncpg.UniqueViolationError as exc:
            raise StoreError("another writer appended to this tree") from exc
        if written != -(-len(rows.leaves) // BLOCK_BYTES):
            raise StoreError("a stored leaf block differs: another writer appended")
