"""The right edge of the tree: what appending needs, as plain data (no I/O).

`Edge` holds the tree size, the roots of the complete perfect subtrees of 256 leaves or more
(the frontier, largest first: one per set bit of size // 256) and the leaf hashes of the last,
partial block. Adding leaves is two steps, so that the rows PostgreSQL writes longest can be
sent before the hashing that takes longest: `blocks` gives the leaf blocks the leaves touch
(cheap, and it leaves the edge alone), `grow` adds them, hashing every perfect node they
complete, and gives the nodes of level >= 8 to write (each block's root, then the frontier
merges). `extend` does both. Nodes are hashed level by level over all the completed blocks at
once (`subtree_roots`): one tight loop per level rather than one per block and level.
`block_roots` is the same hashing on bytes, a pure function so that it can run in another
process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from projections.merkle import _hashing as h

BLOCK_LEVEL = 8
BLOCK_SIZE = 1 << BLOCK_LEVEL
BLOCK_BYTES = BLOCK_SIZE * h.HASH_SIZE


def subtree_roots(hashes: Sequence[bytes], levels: int) -> list[bytes]:
    """Roots of the consecutive perfect subtrees of 2**levels hashes each (a whole number)."""
    row = list(hashes)
    if len(row) % (1 << levels):
        raise ValueError("the hashes do not fill whole subtrees")
    for _ in range(levels):
        row = h.level_up(row)
    return row


def block_roots(data: bytes | memoryview) -> bytes:
    """Roots of whole blocks, given their concatenated leaf hashes (k * 8 KiB in, k * 32 out).

    Each level is hashed from the bytes of the one below, a pair of siblings (64 bytes) per
    node: one update per node, no list of 32-byte hashes (~5% less than `subtree_roots`).
    """
    if len(data) % BLOCK_BYTES:
        raise ValueError("the hashes do not fill whole blocks")
    row = bytes(data)
    for _ in range(BLOCK_LEVEL):
        row = h.level_up_bytes(row)
    return row


PACK = 2048
"""Leaf hashes hashed up to their block roots at a time (64 KiB): the rows stay in the CPU
caches."""


@dataclass
class Rows:
    """Rows to write: leaf blocks as one string of hashes, and nodes.

    `leaves` holds the leaf hashes from leaf `first_block * 256` on, so the blocks from
    `first_block` on, the last one possibly partial: one bytes object, split by PostgreSQL.
    """

    first_block: int = 0
    leaves: bytes | memoryview = b""
    levels: list[int] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)

    @property
    def block_ids(self) -> list[int]:
        return list(range(self.first_block, self.first_block + -(-len(self.leaves) // BLOCK_BYTES)))

    @property
    def blocks(self) -> list[bytes]:
        data = bytes(self.leaves)
        return [data[i : i + BLOCK_BYTES] for i in range(0, len(data), BLOCK_BYTES)]

    def node(self, level: int, index: int, value: bytes) -> None:
        self.levels.append(level)
        self.indexes.append(index)
        self.hashes.append(value)

    def take_nodes(self, other: Rows) -> None:
        """Add `other`'s nodes to these rows."""
        self.levels += other.levels
        self.indexes += other.indexes
        self.hashes += other.hashes


@dataclass
class Edge:
    size: int = 0
    frontier: list[bytes] = field(default_factory=list)
    tail: list[bytes] = field(default_factory=list)

    def copy(self) -> Edge:
        return Edge(self.size, list(self.frontier), list(self.tail))

    def root(self) -> bytes:
        roots = list(self.frontier)
        start = 0
        for level in range(BLOCK_LEVEL - 1, -1, -1):
            if len(self.tail) >> level & 1:
                roots.append(h.perfect_root(self.tail[start : start + (1 << level)]))
                start += 1 << level
        return h.fold_right(roots) if roots else h.EMPTY_ROOT

    def extend(self, leaf_hashes: Sequence[bytes], roots: bytes | None = None) -> Rows:
        """Add leaves; `roots` may bring the completed blocks' roots, computed elsewhere."""
        rows = self.blocks(leaf_hashes)
        rows.take_nodes(self.grow(leaf_hashes, roots))
        return rows

    def blocks(self, leaf_hashes: Sequence[bytes]) -> Rows:
        """The leaf blocks that adding `leaf_hashes` touches, as they will be; no nodes."""
        if not leaf_hashes:
            return Rows()
        return Rows(self.size >> BLOCK_LEVEL, b"".join([*self.tail, *leaf_hashes]))

    def grow(self, leaf_hashes: Sequence[bytes], roots: bytes | None = None) -> Rows:
        """Add leaves to the edge; the rows hold the perfect nodes of level >= 8 they complete.

        `roots` may bring the completed blocks' roots, computed elsewhere (`block_roots`).
        """
        leaves = [*self.tail, *leaf_hashes]
        whole = len(leaves) // BLOCK_SIZE * BLOCK_SIZE
        if roots is None:  # a few blocks at a time: the rows of hashes stay in the CPU caches
            completed = []
            for start in range(0, whole, PACK):
                completed += subtree_roots(leaves[start : min(start + PACK, whole)], BLOCK_LEVEL)
        else:
            size = h.HASH_SIZE
            completed = [roots[i : i + size] for i in range(0, len(roots), size)]
        if len(completed) != whole // BLOCK_SIZE:
            raise ValueError("one root per completed block")
        rows = Rows()
        frontier = self.frontier
        for number, block_root in enumerate(completed, start=self.size >> BLOCK_LEVEL):
            level, index, value = BLOCK_LEVEL, number, block_root
            rows.node(level, index, value)
            while index & 1:  # a right child: merge with its left sibling
                value = h.node_hash(frontier.pop(), value)
                level, index = level + 1, index >> 1
                rows.node(level, index, value)
            frontier.append(value)
        self.tail = leaves[whole:]
        self.size += len(leaf_hashes)
        return rows
