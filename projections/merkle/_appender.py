"""Appending leaves to the stored tree, inside the caller's transaction.

The appender keeps the tree's right edge in memory (`Edge`), so an append hashes the new
leaves and the nodes they complete, each node once (about one node hash per leaf), and writes
the touched leaf blocks and new nodes in the caller's transaction: the tree commits or rolls
back with the caller's own rows and position.

A batch is cut into chunks of 2,048 leaves, pipelined: while chunk k is being written by
PostgreSQL (and, given an `executor`, its block roots hashed in another process), chunk k+1's
leaves are hashed here. Without an executor everything but PostgreSQL runs in this thread.

Each append first compares the stored tree size with its own: after a rollback (or if another
process appended) it reloads its state from the rows, so it never writes past a gap. Two
concurrent writers cannot fork the tree either: a rewritten block must extend the stored one
and nodes are never overwritten; the loser gets a StoreError.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Executor

import asyncpg
import structlog

from projections.merkle import _hashing as h
from projections.merkle._edge import BLOCK_SIZE, Edge, Rows, block_roots, completed_blocks
from projections.merkle._errors import StoreError
from projections.merkle._store import Connection, MerkleStore, quote_schema

log = structlog.get_logger(__name__)

CHUNK = 8 * BLOCK_SIZE
_Pending = deque[tuple[Sequence[bytes], "asyncio.Future[bytes] | None"]]


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
        s = quote_schema(schema)
        self._write_sql = (
            f"WITH b AS (INSERT INTO {s}.merkle_leaf_blocks AS t (block, hashes) "
            f"SELECT * FROM unnest($1::bigint[], $2::bytea[]) "
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
        stored = await self.store.tree_size(conn)
        if stored != self.size:
            log.warning("merkle_reload", schema=self.store.schema, had=self.size, stored=stored)
            await self.reload(conn)
        edge = self._edge.copy()
        pending: _Pending = deque()
        write: asyncio.Future[None] | None = None
        try:
            tail, start = edge.tail, edge.size
            position = 0
            while position < len(items):
                end = min(len(items), position + CHUNK - (start + position) % CHUNK)
                leaves = items[position:end] if hashed else h.leaf_hashes(items[position:end])
                pending.append((leaves, self._block_roots(tail, leaves)))
                tail, position = [], end
                while pending and (len(pending) > 1 or position == len(items)):
                    leaves, roots = pending.popleft()
                    rows = edge.extend(leaves, None if roots is None else await roots)
                    if write is not None:
                        await write
                    write = asyncio.ensure_future(self._write(conn, rows))
                    await asyncio.sleep(0)  # send it: PostgreSQL works while we hash on
            if write is not None:
                await write
        except BaseException:
            await self._abandon(write, pending)
            raise
        self._edge = edge
        return edge.size

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
    async def _abandon(write: asyncio.Future[None] | None, pending: _Pending) -> None:
        """After a failure: let the running query finish, drop the queued hashing."""
        for _, roots in pending:
            if roots is not None and not roots.cancel() and not roots.cancelled():
                roots.exception()  # already done: retrieve it so nothing is logged
        if write is not None and not write.done():
            await asyncio.wait([write])
        if write is not None and write.done() and not write.cancelled():
            write.exception()  # retrieved: the caller gets the first error

    async def _write(self, conn: Connection, rows: Rows) -> None:
        try:
            written = await conn.fetchval(
                self._write_sql, rows.block_ids, rows.blocks, rows.levels, rows.indexes, rows.hashes
            )
        except asyncpg.UniqueViolationError as exc:
            raise StoreError("another writer appended to this tree") from exc
        if written != len(rows.block_ids):
            raise StoreError("a stored leaf block differs: another writer appended")
