"""The appender's in-memory right edge, without a database: any split of the leaves into
batches yields the RFC root and exactly the perfect nodes of level >= 8, each once."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.merkle import leaf_hash, perfect_root, root_from_leaves
from projections.merkle._edge import (
    BLOCK_SIZE,
    Edge,
    block_roots,
    subtree_roots,
)


def completed_blocks(tail: list[bytes], leaf_hashes: list[bytes]) -> bytes:
    """The leaf hashes of the blocks that `leaf_hashes` completes after a block's `tail` (what
    the appender hands the hash worker)."""
    whole = (len(tail) + len(leaf_hashes)) // BLOCK_SIZE * BLOCK_SIZE
    if not whole:
        return b""
    return b"".join([*tail, *leaf_hashes[: whole - len(tail)]])


@settings(max_examples=40, deadline=None)
@given(
    batches=st.lists(st.integers(1, 900), min_size=1, max_size=8),
    precomputed=st.booleans(),
)
def test_any_batching_gives_the_rfc_root_and_each_node_once(batches, precomputed):
    edge = Edge()
    leaves: list[bytes] = []
    blocks: dict[int, bytes] = {}
    nodes: dict[tuple[int, int], bytes] = {}
    for count in batches:
        batch = [leaf_hash(b"%d" % i) for i in range(len(leaves), len(leaves) + count)]
        roots = block_roots(completed_blocks(edge.tail, batch)) if precomputed else None
        rows = edge.extend(batch, roots)
        leaves += batch
        assert edge.size == len(leaves)
        assert edge.root() == root_from_leaves(leaves)
        blocks.update(zip(rows.block_ids, rows.blocks, strict=True))
        for key in zip(rows.levels, rows.indexes, strict=True):
            assert key not in nodes, "a node is written once"
        nodes.update(zip(zip(rows.levels, rows.indexes, strict=True), rows.hashes, strict=True))
    assert b"".join(blocks[b] for b in sorted(blocks)) == b"".join(leaves)
    expected = {
        (level, index): perfect_root(leaves[index << level : (index + 1) << level])
        for level in range(8, len(leaves).bit_length())
        for index in range(len(leaves) >> level)
    }
    assert nodes == expected


def test_completed_blocks_takes_the_tail_into_account():
    tail = [leaf_hash(b"t")] * 10
    batch = [leaf_hash(b"b")] * (2 * BLOCK_SIZE)
    assert len(completed_blocks(tail, batch)) == 2 * BLOCK_SIZE * 32
    assert completed_blocks(tail, batch[:5]) == b""
    assert completed_blocks([], batch[:BLOCK_SIZE]) == b"".join(batch[:BLOCK_SIZE])


def test_block_roots_are_the_rfc_roots_of_the_blocks():
    rng = random.Random(256)
    data = rng.randbytes(5 * BLOCK_SIZE * 32)
    leaves = [data[i : i + 32] for i in range(0, len(data), 32)]
    roots = block_roots(data)
    assert roots == b"".join(subtree_roots(leaves, 8))
    assert roots[:32] == root_from_leaves(leaves[:BLOCK_SIZE])
    assert block_roots(memoryview(data)[BLOCK_SIZE * 32 :]) == roots[32:]
    with pytest.raises(ValueError, match="whole blocks"):
        block_roots(data[:-32])
