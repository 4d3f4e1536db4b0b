"""The Merkle hashing against the published RFC 6962 vectors (transparency-dev/merkle), the
RFC's own recursive definitions, and random trees of 1 to 300 leaves."""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from projections.merkle import (
    EMPTY_ROOT,
    ProofError,
    TreeSizeError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    perfect_root,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "rfc6962"
if not VECTORS.is_dir():  # fail the collection loudly rather than skip
    raise RuntimeError(f"RFC 6962 test vectors missing: {VECTORS}")
INCLUSION = sorted((VECTORS / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((VECTORS / "consistency").rglob("*.json"))

# The eight leaves of the reference tree (RFC 6962 / Certificate Transparency test data).
REFERENCE_ENTRIES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
REFERENCE_LEAVES = [leaf_hash(e) for e in REFERENCE_ENTRIES]


def b64(value: str) -> bytes:
    return base64.b64decode(value)


def case_id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


def test_the_vectors_are_all_there():
    assert len(INCLUSION) >= 80
    assert len(CONSISTENCY) >= 80


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 2.1 read literally: split at the largest power of two below n."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(mth(leaves[:k]), mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 2.1.1 PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], *, complete: bool) -> list[bytes]:
    """RFC 6962 2.1.2 SUBPROOF(m, D[n], b)."""
    if m == len(leaves):
        return [] if complete else [mth(leaves)]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m <= k:
        return [*subproof(m, leaves[:k], complete=complete), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], complete=False), mth(leaves[:k])]


def node_source(leaves: list[bytes]):
    @cache
    def get_node(level: int, index: int) -> bytes:
        start, end = index << level, (index + 1) << level
        assert end <= len(leaves), "asked for a perfect subtree beyond the tree"
        return perfect_root(leaves[start:end])

    return get_node


def test_reference_root_of_eight_leaves():
    assert root_from_leaves(REFERENCE_LEAVES).hex() == (
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    )
    assert root_from_leaves([]) == EMPTY_ROOT


@pytest.mark.parametrize("vector", INCLUSION, ids=case_id)
def test_inclusion_vector(vector: Path):
    case = json.loads(vector.read_text())
    args = (
        b64(case["leafHash"]),
        case["leafIdx"],
        case["treeSize"],
        [b64(p) for p in case["proof"] or []],
        b64(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)
        if case["treeSize"] <= len(REFERENCE_LEAVES) and args[0] in REFERENCE_LEAVES:
            leaves = REFERENCE_LEAVES[: case["treeSize"]]
            assert inclusion_proof(args[1], args[2], node_source(leaves)) == args[3]


@pytest.mark.parametrize("vector", CONSISTENCY, ids=case_id)
def test_consistency_vector(vector: Path):
    case = json.loads(vector.read_text())
    size1, size2 = case["size1"], case["size2"]
    proof = [b64(p) for p in case["proof"] or []]
    args = (size1, size2, b64(case["root1"]), b64(case["root2"]), proof)
    if case["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)
        if (
            size1 > 0
            and size2 <= len(REFERENCE_LEAVES)
            and args[3] == mth(REFERENCE_LEAVES[:size2])
        ):
            got = consistency_proof(size1, size2, node_source(REFERENCE_LEAVES[:size2]))
            assert got == proof


def random_leaves(size: int, salt: bytes) -> list[bytes]:
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(size)]


PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(size=st.integers(1, 300), salt=st.binary(max_size=8))
def test_every_inclusion_proof_verifies(size, salt):
    leaves = random_leaves(size, salt)
    root = root_from_leaves(leaves)
    assert root == mth(leaves)
    get_node = node_source(leaves)
    for index in range(size):
        proof = inclusion_proof(index, size, get_node)
        verify_inclusion(leaves[index], index, size, proof, root)
    assert inclusion_proof(size - 1, size, get_node) == path(size - 1, leaves)


@PROPERTY
@given(size=st.integers(1, 300), salt=st.binary(max_size=8))
def test_consistency_proofs_verify_between_any_two_sizes(size, salt):
    leaves = random_leaves(size, salt)
    get_node = node_source(leaves)
    roots = [root_from_leaves(leaves[:n]) for n in range(size + 1)]
    for first in range(1, size + 1):
        proof = consistency_proof(first, size, get_node)
        assert proof == (subproof(first, leaves, complete=True) if first < size else [])
        verify_consistency(first, size, roots[first], roots[size], proof)
    for first in range(1, size, 7):
        for second in range(first, size + 1, 11):
            proof = consistency_proof(first, second, get_node)
            verify_consistency(first, second, roots[first], roots[second], proof)


@PROPERTY
@given(data=st.data(), size=st.integers(2, 300), salt=st.binary(max_size=8))
def test_tampering_with_any_proof_byte_fails(data, size, salt):
    leaves = random_leaves(size, salt)
    get_node = node_source(leaves)
    root = root_from_leaves(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(index, size, get_node)
    if proof:
        at = data.draw(st.integers(0, 32 * len(proof) - 1))
        bit = data.draw(st.integers(0, 7))
        bad = bytearray(b"".join(proof))
        bad[at] ^= 1 << bit
        tampered = [bytes(bad[i : i + 32]) for i in range(0, len(bad), 32)]
        with pytest.raises(ProofError):
            verify_inclusion(leaves[index], index, size, tampered, root)
    first = data.draw(st.integers(1, size - 1))
    proof = consistency_proof(first, size, get_node)
    at = data.draw(st.integers(0, 32 * len(proof) - 1))
    bad = bytearray(b"".join(proof))
    bad[at] ^= 1 << data.draw(st.integers(0, 7))
    tampered = [bytes(bad[i : i + 32]) for i in range(0, len(bad), 32)]
    first_root = root_from_leaves(leaves[:first])
    with pytest.raises(ProofError):
        verify_consistency(first, size, first_root, root, tampered)
    # Claiming the proof for other sizes or another leaf fails too.
    with pytest.raises(ProofError):
        verify_consistency(first, size, first_root, root, [*proof, proof[-1]])
    # (A proof may hold for another tree size of the same shape: the signed size is what counts.)
    if index ^ 1 < size:
        with pytest.raises(ProofError):
            verify_inclusion(
                leaves[index], index ^ 1, size, inclusion_proof(index, size, get_node), root
            )


def test_generation_refuses_what_has_no_proof():
    get_node = node_source(REFERENCE_LEAVES)
    with pytest.raises(TreeSizeError):
        inclusion_proof(8, 8, get_node)
    with pytest.raises(TreeSizeError):
        inclusion_proof(-1, 8, get_node)
    with pytest.raises(TreeSizeError):
        consistency_proof(0, 8, get_node)
    with pytest.raises(TreeSizeError):
        consistency_proof(5, 4, get_node)
    assert consistency_proof(8, 8, get_node) == []


def test_verifiers_reject_malformed_input():
    leaves = REFERENCE_LEAVES
    root = root_from_leaves(leaves)
    proof = inclusion_proof(3, 8, node_source(leaves))
    verify_inclusion(leaves[3], 3, 8, proof, root)
    with pytest.raises(ProofError, match="32"):
        verify_inclusion(leaves[3], 3, 8, [proof[0] + b"\x00", *proof[1:]], root)
    with pytest.raises(ProofError, match="negative"):
        verify_inclusion(leaves[3], -1, 8, proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(leaves[3][:31], 3, 8, proof, root)
    with pytest.raises(ProofError, match="short"):
        verify_inclusion(leaves[3], 3, 8, proof[:-1], root)
    # Equal sizes: an empty proof and equal roots, the empty tree's root for size 0.
    verify_consistency(8, 8, root, root, [])
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    with pytest.raises(ProofError):
        verify_consistency(0, 0, root, root, [])
    with pytest.raises(ProofError):
        verify_consistency(0, 3, EMPTY_ROOT, root, [])
    with pytest.raises(ProofError):
        verify_consistency(-1, 3, EMPTY_ROOT, root, [root])
