"""Appending leaves to the stored tree, inside the caller's transaction.

The appender keeps the tree's right edge in memory (`Edge`), so an append hashes the new
leaves and the nodes they complete, each node once (about one node hash per leaf), and writes
the touched leaf blocks and new nodes in the caller's transaction: the tree commits or rolls
back with the caller's own rows and position.

A batch is written in rounds of up to 4,096 leaves, so that PostgreSQL writes while this
process hashes: a round's leaves are hashed, its leaf blocks (the bulk of the rows, packed into
one bytea) sent, and its nodes go with the next round's blocks or, after the last round, in a
small write of their own (hashed here while PostgreSQL writes the last blocks).

Given a `HashWorker` (`_worker`), the nodes of whole blocks, about half of the CPU of an
append, are hashed in that process instead, so an append uses two cores: the leaves are hashed
in chunks of 512, and each chunk's completed blocks are handed to the worker as soon as they
are packed, so that it hashes one chunk's nodes while this process hashes the next chunk's
leaves. A round's roots are taken after the next round is hashed; the last round's are awaited
(the worker lags a little, so the append's last two whole blocks are hashed here meanwhile)
and its nodes go with its blocks. The few merges above the blocks are hashed here. If the
worker fails, its blocks are hashed here instead (logged): the tree is the same, and the tests
compare it row by row.

Each append compares the stored tree size with its own (fetched while the first chunk's leaves
are hashed, as leaf hashes do not depend on the position): after a rollback (or if another
process appended) it reloads its state from the rows, so it never writes past a gap. Two
concurrent writers cannot fork the tree either: a rewritten block must extend the stored one
and nodes are never overwritten; the loser gets a StoreError.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

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
)
from projections.merkle._errors import StoreError
from projections.merkle._store import Connection, MerkleStore, quote_schema
from projections.merkle._worker import HashWorker, HashWorkerError

log = structlog.get_logger(__name__)

ROUND = 16 * BLOCK_SIZE
"""Leaves per write of leaf blocks (128 KiB): PostgreSQL writes a round while the next one is
hashed (measured with a hash worker, 10,000 leaves per append: 4,096 a little faster than
16,384, the tail shorter)."""

LOCAL = 2
"""Whole blocks at the end of an append hashed by this process, while the worker finishes the
blocks it has (it ends 0.4-0.9 ms after the last one is given; with 2 kept the ratio moved
0.51-0.53 -> 0.53-0.55, with 4 no further)."""

CHUNK = 2 * BLOCK_SIZE
"""Leaves hashed at a time (16 KiB of hashes), a chunk's blocks then given to the hash worker.
The worker's last chunk is the wait at the end of an append: 2,048 leaves gave 0.50, 512 0.51-
0.53 of hashlib's rate (ops/bench/merkle.py)."""


@dataclass
class _Blocks:
    """Whole blocks handed to the hash worker: bytes [start, end) of `view`, and their roots."""

    view: memoryview
    start: int
    end: int
    roots: asyncio.Future[bytes] | None  # None: the worker was gone, or not given
    given: bool = True  # False: kept for this process (LOCAL)

    def hash(self) -> bytes:
        """The roots, hashed in this process."""
        return block_roots(self.view[self.start : self.end])


class MerkleAppender:
    """The single writer of one schema's tree. Build it with `await MerkleAppender.load()`.

    `hasher` (a `HashWorker`, owned and closed by the caller; it may be replaced between
    appends) takes the hashing of the blocks' nodes, about half of the CPU, off this process.
    """

    def __init__(self, schema: str, *, hasher: HashWorker | None = None) -> None:
        self.store = MerkleStore(schema)
        self.hasher = hasher
        self._edge = Edge()
        self._lock = asyncio.Lock()  # one append at a time, even from several tasks
        # The leaf blocks of a round, packed here for the write (not in a fresh bytes object
        # per round: at 512 KiB that costs a page fault per 4 KiB); two, so that a round is
        # packed while the previous round's blocks are still being sent.
        size = ROUND * h.HASH_SIZE + BLOCK_BYTES
        self._buffers = (bytearray(size), bytearray(size))
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
        cls, conn: Connection, schema: str, *, hasher: HashWorker | None = None
    ) -> MerkleAppender:
        appender = cls(schema, hasher=hasher)
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
        # The stored size is fetched while the first chunk is hashed: leaf hashes do not depend
        # on where the leaves go.
        stored: asyncio.Future[int] | None = asyncio.ensure_future(self.store.tree_size(conn))
        await asyncio.sleep(0)  # send it
        edge = self._edge  # grown as the roots of the rounds' blocks come
        nodes = Rows()  # hashed, not yet sent
        write: asyncio.Future[None] | None = None
        submitted: list[_Blocks] = []  # given to the worker in this append
        pending: tuple[list[bytes], list[_Blocks]] | None = None  # a round's leaves, not grown
        try:
            position = number = 0
            while position < len(items):
                if pending is not None and (edge.size + len(pending[0])) % BLOCK_SIZE:
                    # Only after a reload: rounds end on block boundaries of the old size.
                    nodes.take_nodes(await self._grow(edge, pending))
                    pending = None
                start = edge if pending is None else Edge(edge.size + len(pending[0]))
                # Rounds end on block boundaries, so a block is written once per round.
                end = min(len(items), position + ROUND - start.size % ROUND)
                # Two buffers: one is packed while the other's write may still be in flight
                # (or its blocks with the worker).
                view = memoryview(self._buffers[number % 2])
                hashing: list[_Blocks] = []
                start, leaves, packed = await self._hash_round(
                    conn,
                    items[position:end],
                    hashed=hashed,
                    final=end == len(items),
                    edge=start,
                    stored=stored,
                    view=view,
                    hashing=hashing,
                )
                submitted += hashing
                if stored is not None:
                    edge, stored = start, None
                position, number = end, number + 1
                if write is not None:
                    await write
                if pending is not None:  # the worker had the round's blocks while we hashed
                    nodes.take_nodes(await self._grow(edge, pending))
                    pending = None
                rows = Rows(start.size >> BLOCK_LEVEL, view[:packed])
                pending = (leaves[len(start.tail) :], hashing)
                if position == len(items) and self.hasher is not None:
                    # The worker's last answer comes soon after: the last round's nodes go
                    # with its blocks, one statement fewer.
                    nodes.take_nodes(await self._grow(edge, pending))
                    pending = None
                rows.take_nodes(nodes)
                nodes = Rows()
                write = asyncio.ensure_future(self._write(conn, rows))
                await asyncio.sleep(0)  # send it: PostgreSQL writes the blocks while we hash
            await self._finish(conn, edge, pending, nodes, write)
        except BaseException:
            await self._abandon(stored, write, *(blocks.roots for blocks in submitted))
            raise
        self._edge = edge
        return edge.size

    async def _hash_round(
        self,
        conn: Connection,
        items: Sequence[bytes],
        *,
        hashed: bool,
        final: bool,
        edge: Edge,
        stored: asyncio.Future[int] | None,
        view: memoryview,
        hashing: list[_Blocks],
    ) -> tuple[Edge, list[bytes], int]:
        """Hash a round's leaves chunk by chunk, packed into `view` after the edge's partial
        block; give the whole blocks to the worker as they fill (appended to `hashing`).

        Returns the edge to grow (checked against the `stored` size if given), the partial
        block and new leaf hashes, and the bytes packed.
        """
        leaves: list[bytes] = []
        offset = sent = position = 0  # bytes packed; bytes given to the worker; items hashed
        # The last LOCAL whole blocks of the append stay here: this process hashes their nodes
        # while the worker finishes the blocks it has (it lags by about as much).
        local = (edge.size + len(items)) // BLOCK_SIZE * BLOCK_SIZE - LOCAL * BLOCK_SIZE
        local = max(local - edge.size, 0) if final else len(items)
        while position < len(items):  # chunks end on CHUNK boundaries of the tree
            stop = min(len(items), position + CHUNK - (edge.size + position) % CHUNK)
            if position < local < stop:
                stop = local
            chunk = items[position:stop] if hashed else h.leaf_hashes(items[position:stop])
            if position == 0:
                if stored is not None:
                    edge = await self._check_size(conn, await stored)
                chunk = [*edge.tail, *chunk]  # the partial block is rewritten
            position = stop
            leaves += chunk
            joined = b"".join(chunk)  # <= 72 KiB: no fresh mapping from malloc
            view[offset : offset + len(joined)] = joined
            offset += len(joined)
            whole = offset - offset % BLOCK_BYTES
            if self.hasher is not None and whole > sent:
                given = position <= local
                future = self.hasher.submit(view[sent:whole]) if given else None
                hashing.append(_Blocks(view, sent, whole, future, given=given))
                sent = whole
        return edge, leaves, offset

    async def _check_size(self, conn: Connection, stored: int) -> Edge:
        """A copy of the edge to grow, reloaded first if the stored tree is not ours."""
        if stored != self.size:
            log.warning("merkle_reload", schema=self.store.schema, had=self.size, stored=stored)
            await self.reload(conn)
        return self._edge.copy()

    async def _finish(
        self,
        conn: Connection,
        edge: Edge,
        pending: tuple[list[bytes], list[_Blocks]] | None,
        nodes: Rows,
        write: asyncio.Future[None] | None,
    ) -> None:
        """After the last round: its nodes (the worker's last answer, the only one awaited, or
        hashed here while PostgreSQL writes its blocks), then written."""
        if pending is not None:
            nodes.take_nodes(await self._grow(edge, pending))
        if write is not None:
            await write
        if nodes.levels:
            await self._write(conn, nodes)

    async def _grow(self, edge: Edge, pending: tuple[list[bytes], list[_Blocks]]) -> Rows:
        """Add a round's new leaves to `edge`, with the roots of its blocks (`_roots`)."""
        leaves, hashing = pending
        return edge.grow(leaves, await self._roots(hashing))

    async def _roots(self, hashing: Sequence[_Blocks]) -> bytes | None:
        """The roots of the blocks handed to the worker, in order, hashed here if it failed;
        None without a worker (`Edge.grow` hashes them)."""
        if not hashing and self.hasher is None:
            return None
        # The blocks kept here first, while the worker finishes.
        roots = [None if blocks.given else blocks.hash() for blocks in hashing]
        for number, blocks in enumerate(hashing):
            if blocks.given:
                value = None
                if blocks.roots is not None:
                    with contextlib.suppress(HashWorkerError):
                        value = await blocks.roots
                expected = (blocks.end - blocks.start) // BLOCK_BYTES * h.HASH_SIZE
                if value is None or len(value) != expected:
                    log.warning("merkle_hash_worker_fallback", schema=self.store.schema)
                    value = blocks.hash()
                roots[number] = value
        return b"".join(cast("list[bytes]", roots))

    @staticmethod
    async def _abandon(*tasks: asyncio.Future[Any] | None) -> None:
        """After a failure: let a running query finish, drop the hashing not awaited yet."""
        for task in tasks:
            if task is None:
                continue
            if not isinstance(task, asyncio.Task):  # blocks with the hash worker
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
