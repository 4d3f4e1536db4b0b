"""Proof verification exactly as RFC 9162 sections 2.1.3.2 and 2.1.4.2 write it.

Both verifiers return None when the proof holds and raise `ProofError` (naming the reason)
otherwise, so a forgotten check cannot pass silently. Beyond the RFC's steps they reject
malformed input up front: negative or out-of-order sizes, a leaf hash or proof element that is
not 32 bytes. Edge cases follow the published transparency-dev/merkle test vectors:

- first == second: the proof must be empty and the roots equal; for two empty trees both roots
  must also be MTH({}) = SHA-256("").
- first == 0 < second: rejected; the RFC defines consistency only for 0 < first.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from projections.merkle._errors import ProofError
from projections.merkle._hashing import EMPTY_ROOT, HASH_SIZE, node_hash


def _check_elements(proof: Sequence[bytes]) -> None:
    for position, element in enumerate(proof):
        if len(element) != HASH_SIZE:
            raise ProofError(f"proof element {position} is {len(element)} bytes, not 32")


def _check_root(computed: bytes, expected: bytes, what: str) -> None:
    if not hmac.compare_digest(computed, expected):
        raise ProofError(f"{what} does not match the proof")


def verify_inclusion(
    leaf_hash: bytes, leaf_index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 2.1.3.2: raise ProofError unless `proof` puts `leaf_hash` under `root`."""
    if leaf_index < 0 or tree_size < 0:
        raise ProofError("leaf index and tree size must not be negative")
    # 1. leaf_index >= tree_size: fail.
    if leaf_index >= tree_size:
        raise ProofError(f"leaf index {leaf_index} is not below tree size {tree_size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf_hash)} bytes, not 32")
    _check_elements(proof)
    # 2.-3.
    fn, sn = leaf_index, tree_size - 1
    r = leaf_hash
    # 4.
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # 5.
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    _check_root(r, root, "root hash")


def _trivial_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Check the cases outside 0 < first < second; True if one of them settled the proof."""
    if first < 0 or second < 0:
        raise ProofError("tree sizes must not be negative")
    if first > second:
        raise ProofError(f"first size {first} is above second size {second}")
    if first == second:
        if proof:
            raise ProofError("trees of equal size need an empty consistency proof")
        if first == 0 and not hmac.compare_digest(first_root, EMPTY_ROOT):
            raise ProofError("the root of the empty tree is SHA-256 of nothing")
        _check_root(first_root, second_root, "second root")
        return True
    if first == 0:
        raise ProofError("no consistency proof exists from the empty tree")
    # 1.
    if not proof:
        raise ProofError("consistency proof is empty")
    _check_elements(proof)
    return False


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: raise ProofError unless tree `second` extends tree `first`."""
    if _trivial_consistency(first, second, first_root, second_root, proof):
        return
    # 2.
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    # 3.-4.
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5.
    fr = sr = path[0]
    # 6.
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # 7.
    if sn != 0:
        raise ProofError("consistency proof is too short")
    _check_root(fr, first_root, "first root")
    _check_root(sr, second_root, "second root")
