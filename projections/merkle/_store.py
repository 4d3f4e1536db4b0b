"""The Merkle tree in PostgreSQL: tables, and roots and proofs read from them.

Two append-only tables per schema (see `DDL`):

- `merkle_leaf_blocks`: the leaf hashes of leaves [256 * block, 256 * block + 256),
  concatenated, one row per block; the last block is rewritten as it fills.
- `merkle_nodes`: the hash of every perfect subtree of 256 leaves or more, (level, idx) being
  the subtree of leaves [idx * 2**level, (idx + 1) * 2**level), level >= 8.

A perfect subtree below level 8 is hashed on demand from its block (at most 255 hashes), so
a root or proof needs O(log n) rows, fetched in one round trip, and serves any tree size the
log has passed, not only the current one: stored rows never change once complete.
"""

from __future__ import annotations

import zlib

import asyncpg

from projections.merkle import _hashing as h
from projections.merkle._edge import BLOCK_LEVEL, BLOCK_SIZE
from projections.merkle._errors import TreeSizeError

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
"""A connection, pooled or not."""

DDL = """
CREATE TABLE IF NOT EXISTS {s}.merkle_leaf_blocks (
    block bigint PRIMARY KEY CHECK (block >= 0),
    hashes bytea NOT NULL
        CHECK (octet_length(hashes) BETWEEN 32 AND 8192 AND octet_length(hashes) % 32 = 0)
);
-- 8 KiB of random hashes: stored out of line without a futile compression attempt.
ALTER TABLE {s}.merkle_leaf_blocks ALTER COLUMN hashes SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS {s}.merkle_nodes (
    level smallint NOT NULL CHECK (level BETWEEN 8 AND 63),
    idx bigint NOT NULL CHECK (idx >= 0),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (level, idx)
);
"""


def quote_schema(schema: str) -> str:
    if not schema or "\x00" in schema:
        raise ValueError(f"invalid schema name {schema!r}")
    return '"' + schema.replace('"', '""') + '"'


async def create_tables(conn: Connection, schema: str) -> None:
    """Create the tree's tables in an existing schema; safe to run twice, even concurrently."""
    s = quote_schema(schema)
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)", zlib.crc32(f"merkle:{schema}".encode())
        )
        # Only when a table is missing: ALTER TABLE would wait for a running append.
        missing = await conn.fetchval(
            "SELECT to_regclass($1) IS NULL OR to_regclass($2) IS NULL",
            f"{s}.merkle_leaf_blocks",
            f"{s}.merkle_nodes",
        )
        if missing:
            await conn.execute(DDL.format(s=s))


class NodeSource:
    """`get_node` over fetched rows: stored nodes above level 8, block hashes below."""

    def __init__(self, nodes: dict[h.Node, bytes], blocks: dict[int, bytes]) -> None:
        self.nodes = nodes
        self.blocks = blocks

    def __call__(self, level: int, index: int) -> bytes:
        if level >= BLOCK_LEVEL:
            try:
                return self.nodes[level, index]
            except KeyError:
                raise TreeSizeError("the tree has not reached that size") from None
        first = index << level
        data = self.blocks.get(first >> BLOCK_LEVEL, b"")
        start = (first % BLOCK_SIZE) * h.HASH_SIZE
        end = start + (h.HASH_SIZE << level)
        if len(data) < end:
            raise TreeSizeError("the tree has not reached that size")
        if level == 0:
            return data[start:end]
        return h.perfect_root([data[i : i + h.HASH_SIZE] for i in range(start, end, h.HASH_SIZE)])


class MerkleStore:
    """Reads of the stored tree; every method takes the connection (or transaction) to use."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        s = quote_schema(schema)
        self._size_sql = (
            f"SELECT block * {BLOCK_SIZE} + octet_length(hashes) / {h.HASH_SIZE} "
            f"FROM {s}.merkle_leaf_blocks ORDER BY block DESC LIMIT 1"
        )
        # One primary-key probe per wanted node (LIMIT 1 keeps the planner from hashing the
        # whole table), and the wanted leaf blocks.
        self._fetch_sql = (
            f"SELECT w.level::int, w.idx, n.hash "
            f"FROM unnest($1::smallint[], $2::bigint[]) AS w(level, idx) "
            f"CROSS JOIN LATERAL (SELECT hash FROM {s}.merkle_nodes "
            f"WHERE level = w.level AND idx = w.idx LIMIT 1) AS n "
            f"UNION ALL SELECT -1, b.block, b.hashes FROM {s}.merkle_leaf_blocks b "
            f"WHERE b.block = ANY($3::bigint[])"
        )

    async def tree_size(self, conn: Connection) -> int:
        size = await conn.fetchval(self._size_sql)
        return int(size or 0)

    async def nodes(self, conn: Connection, needed: set[h.Node]) -> NodeSource:
        """Fetch, in one round trip, what `get_node` needs to answer for `needed`."""
        upper = sorted(node for node in needed if node[0] >= BLOCK_LEVEL)
        blocks = sorted({(i << lv) >> BLOCK_LEVEL for lv, i in needed if lv < BLOCK_LEVEL})
        rows = await conn.fetch(
            self._fetch_sql, [lv for lv, _ in upper], [i for _, i in upper], blocks
        )
        source = NodeSource({}, {})
        for level, index, value in rows:
            if level < 0:
                source.blocks[index] = value
            else:
                source.nodes[level, index] = value
        return source

    async def get_root(self, conn: Connection, tree_size: int) -> bytes:
        """MTH of the first `tree_size` leaves; TreeSizeError beyond the stored tree."""
        if tree_size < 0:
            raise TreeSizeError(f"tree size {tree_size} is negative")
        if tree_size == 0:
            return h.EMPTY_ROOT
        source = await self.nodes(conn, set(h.subtree_nodes(0, tree_size)))
        return h.root_at(tree_size, source)

    async def inclusion_proof(
        self, conn: Connection, leaf_index: int, tree_size: int
    ) -> list[bytes]:
        """PATH(leaf_index, D[tree_size]), leaf side first; TreeSizeError beyond the tree."""
        ranges = h.inclusion_ranges(leaf_index, tree_size)
        source = await self.nodes(conn, h.nodes_for(ranges) | {(0, leaf_index)})
        source(0, leaf_index)  # the leaf exists (the ranges cover every other leaf)
        return [h.range_hash(start, end, source) for start, end in ranges]

    async def consistency_proof(self, conn: Connection, first: int, second: int) -> list[bytes]:
        """PROOF(first, D[second]) for 0 < first <= second; TreeSizeError beyond the tree."""
        ranges = h.consistency_ranges(first, second)
        if not ranges:
            await self._require_size(conn, second)
            return []
        source = await self.nodes(conn, h.nodes_for(ranges))
        return [h.range_hash(start, end, source) for start, end in ranges]

    async def _require_size(self, conn: Connection, tree_size: int) -> None:
        if tree_size > await self.tree_size(conn):
            raise TreeSizeError("the tree has not reached that size")

    async def leaf_hashes(self, conn: Connection, start: int, end: int) -> list[bytes]:
        """Stored leaf hashes of leaves [start, end)."""
        if not 0 <= start <= end:
            raise TreeSizeError(f"bad leaf range [{start}, {end})")
        if start == end:
            return []
        needed = {(0, i) for i in range(start, end, BLOCK_SIZE)} | {(0, end - 1)}
        source = await self.nodes(conn, needed)
        return [source(0, i) for i in range(start, end)]
