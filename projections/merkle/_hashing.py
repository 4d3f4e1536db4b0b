"""RFC 6962 / RFC 9162 Merkle tree hashing and proof generation.

Leaf hash = SHA-256(0x00 || entry); node hash = SHA-256(0x01 || left || right); the root of
n > 1 leaves splits at k, the largest power of two below n (RFC 9162 section 2.1.1).

Every node of that tree covers a range [start, end) of leaves that is either a *perfect*
subtree (2**level leaves starting at index * 2**level) or a subtree on the right edge of the
tree (end == tree size). An edge subtree is a right fold of the perfect subtrees its size
decomposes into (largest first), so any root or proof element can be computed from perfect
subtree hashes alone: `get_node(level, index)` returns the hash of perfect subtree
`index` at `level` (level 0 = leaf hashes). The store keeps exactly those, never recomputing
what is already stored, and the `*_nodes` planners tell it which ones a request needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from projections.merkle._errors import ProofError, TreeSizeError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH({}): the root of the empty tree."""

GetNode = Callable[[int, int], bytes]
Node = tuple[int, int]
Range = tuple[int, int]

# Contexts that have already absorbed the domain-separation byte: `.copy()` then `.update()`
# costs less than concatenating the prefix (a fresh context and a copy of the input) and is
# the cheapest per-call pattern measured (CPython 3.11, OpenSSL 3.0).
_LEAF_PREFIX = hashlib.sha256(b"\x00")
_NODE_PREFIX = hashlib.sha256(b"\x01")


def leaf_hash(entry: bytes) -> bytes:
    ctx = _LEAF_PREFIX.copy()
    ctx.update(entry)
    return ctx.digest()


def leaf_hashes(entries: Iterable[bytes]) -> list[bytes]:
    copy = _LEAF_PREFIX.copy
    out: list[bytes] = []
    append = out.append
    for entry in entries:
        ctx = copy()
        ctx.update(entry)
        append(ctx.digest())
    return out


def node_hash(left: bytes, right: bytes) -> bytes:
    ctx = _NODE_PREFIX.copy()
    ctx.update(left)
    ctx.update(right)
    return ctx.digest()


def level_up(hashes: Sequence[bytes]) -> list[bytes]:
    """Hash an even-length row of sibling pairs into the row above it."""
    copy = _NODE_PREFIX.copy
    out: list[bytes] = []
    append = out.append
    pairs = iter(hashes)
    for left, right in zip(pairs, pairs, strict=True):
        ctx = copy()
        ctx.update(left)
        ctx.update(right)
        append(ctx.digest())
    return out


def level_up_bytes(row: bytes) -> bytes:
    """`level_up` on concatenated hashes: each 64 bytes (a sibling pair) become 32."""
    copy = _NODE_PREFIX.copy
    out: list[bytes] = []
    append = out.append
    for start in range(0, len(row), 2 * HASH_SIZE):
        ctx = copy()
        ctx.update(row[start : start + 2 * HASH_SIZE])
        append(ctx.digest())
    return b"".join(out)


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The root of a perfect subtree, given its 2**level leaf (or lower node) hashes."""
    row = list(hashes)
    if not row or len(row) & (len(row) - 1):
        raise ValueError("a perfect subtree has a power-of-two number of leaves")
    while len(row) > 1:
        row = level_up(row)
    return row[0]


def fold_right(roots: Sequence[bytes]) -> bytes:
    """Join perfect subtree roots, largest first, into the root of their union."""
    result = roots[-1]
    for left in reversed(roots[:-1]):
        result = node_hash(left, result)
    return result


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (not entries): RFC 9162 section 2.1.1."""
    size = len(leaf_hashes)
    if size == 0:
        return EMPTY_ROOT
    roots = [
        perfect_root(leaf_hashes[start : start + (1 << level)])
        for level, start in _decompose(0, size)
    ]
    return fold_right(roots)


def _decompose(start: int, end: int) -> list[tuple[int, int]]:
    """(level, first leaf) of the perfect subtrees that make up [start, end), largest first."""
    out = []
    width = end - start
    for level in range(width.bit_length() - 1, -1, -1):
        if width >> level & 1:
            out.append((level, start))
            start += 1 << level
    return out


def subtree_nodes(start: int, end: int) -> list[Node]:
    """Perfect nodes (level, index) whose right fold is the hash of subtree [start, end)."""
    return [(level, first >> level) for level, first in _decompose(start, end)]


def _split(width: int) -> int:
    return 1 << ((width - 1).bit_length() - 1)


def inclusion_ranges(leaf_index: int, tree_size: int) -> list[Range]:
    """The subtrees whose hashes form PATH(leaf_index, D[tree_size]), leaf side first."""
    if not 0 <= leaf_index < tree_size:
        raise TreeSizeError(f"leaf index {leaf_index} is not in a tree of size {tree_size}")
    out: list[Range] = []
    start, end = 0, tree_size
    while end - start > 1:
        mid = start + _split(end - start)
        if leaf_index < mid:
            out.append((mid, end))
            end = mid
        else:
            out.append((start, mid))
            start = mid
    out.reverse()
    return out


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The subtrees whose hashes form PROOF(first, D[second]) (RFC 6962 SUBPROOF)."""
    if not 0 < first <= second:
        raise TreeSizeError(f"no consistency proof from size {first} to size {second}")
    out: list[Range] = []
    start, end, known = 0, second, True
    while first != end:
        mid = start + _split(end - start)
        if first <= mid:
            out.append((mid, end))
            end = mid
        else:
            out.append((start, mid))
            start, known = mid, False
    if not known:
        out.append((start, end))
    out.reverse()
    return out


def nodes_for(ranges: Iterable[Range]) -> set[Node]:
    return {node for start, end in ranges for node in subtree_nodes(start, end)}


def range_hash(start: int, end: int, get_node: GetNode) -> bytes:
    return fold_right([get_node(level, index) for level, index in subtree_nodes(start, end)])


def root_at(tree_size: int, get_node: GetNode) -> bytes:
    if tree_size < 0:
        raise TreeSizeError(f"tree size {tree_size} is negative")
    return range_hash(0, tree_size, get_node) if tree_size else EMPTY_ROOT


def inclusion_proof(leaf_index: int, tree_size: int, get_node: GetNode) -> list[bytes]:
    return [range_hash(s, e, get_node) for s, e in inclusion_ranges(leaf_index, tree_size)]


def consistency_proof(first: int, second: int, get_node: GetNode) -> list[bytes]:
    return [range_hash(s, e, get_node) for s, e in consistency_ranges(first, second)]


def hash_from_hex(text: str) -> bytes:
    """Parse a hash as the API writes it: 64 lowercase hex digits."""
    if len(text) != 2 * HASH_SIZE or text.strip("0123456789abcdef"):
        raise ProofError(f"not a lowercase hex SHA-256 hash: {text[:80]!r}")
    return bytes.fromhex(text)
