"""The right edge of the tree: what appending needs, as plain data (no I/O).

`Edge` holds the tree size, the roots of the complete perfect subtrees of 256 leaves or more
(the frontier, largest first: one per set bit of size // 256) and the leaf hashes of the last,
partial block. Extending it by a batch returns the rows to write: every touched leaf block,
and every perfect node of level >= 8 completed by the batch (each block's root, then the
frontier merges). `block_roots` is the expensive part, a pure function so that it can run in
another process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from projections.merkle import _hashing as h

BLOCK_LEVEL = 8
BLOCK_SIZE = 1 << BLOCK_LEVEL
BLOCK_BYTES = BLOCK_SIZE * h.HASH_SIZE


def block_roots(data: bytes) -> bytes:
    """Roots of whole blocks, given their concatenated leaf hashes (k * 8 KiB in, k * 32 out)."""
    size = h.HASH_SIZE
    roots = []
    for offset in range(0, len(data), BLOCK_BYTES):
        block = [data[i : i + size] for i in range(offset, offset + BLOCK_BYTES, size)]
        roots.append(h.perfect_root(block))
    return b"".join(roots)


def completed_blocks(tail: Sequence[bytes], leaf_hashes: Sequence[bytes]) -> bytes:
    """The leaf hashes of the blocks that `leaf_hashes` completes after a block's `tail`."""
    whole = (len(tail) + len(leaf_hashes)) // BLOCK_SIZE * BLOCK_SIZE
    if not whole:
        return b""
    return b"".join([*tail, *leaf_hashes[: whole - len(tail)]])


@dataclass
class Rows:
    block_ids: list[int] = field(default_factory=list)
    blocks: list[bytes] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)

    def node(self, level: int, index: int, value: bytes) -> None:
        self.levels.append(level)
        self.indexes.append(index)
        self.hashes.append(value)


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
        rows = Rows()
        position, count, completed = 0, len(leaf_hashes), 0
        while position < count:
            take = min(BLOCK_SIZE - len(self.tail), count - position)
            self.tail.extend(leaf_hashes[position : position + take])
            position += take
            block = self.size >> BLOCK_LEVEL
            self.size += take
            rows.block_ids.append(block)
            rows.blocks.append(b"".join(self.tail))
            if len(self.tail) < BLOCK_SIZE:
                break
            if roots is None:
                value = h.perfect_root(self.tail)
            else:
                value = roots[completed * h.HASH_SIZE : (completed + 1) * h.HASH_SIZE]
                completed += 1
            level, index = BLOCK_LEVEL, block
            rows.node(level, index, value)
            while index & 1:  # a right child: merge with its left sibling
                value = h.node_hash(self.frontier.pop(), value)
                level, index = level + 1, index >> 1
                rows.node(level, index, value)
            self.frontier.append(value)
            self.tail = []
        return rows
