"""A verifiable credit log: an RFC 9162 Merkle tree over the log, stored in PostgreSQL, and
C2SP tlog-checkpoint signed tree heads (Ed25519 signed notes).

Hashes are bytes here; the HTTP API writes them as lowercase hex (`bytes.hex()`,
`hash_from_hex`). Leaf i is the i-th entry appended; entries are opaque bytes.
"""

from projections.merkle._appender import MerkleAppender
from projections.merkle._errors import (
    BadSignatureError,
    MalformedNoteError,
    MerkleError,
    NoteError,
    ProofError,
    StoreError,
    TreeSizeError,
    UnknownKeyError,
)
from projections.merkle._hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    GetNode,
    consistency_proof,
    hash_from_hex,
    inclusion_proof,
    leaf_hash,
    leaf_hashes,
    node_hash,
    perfect_root,
    root_from_leaves,
)
from projections.merkle._keys import NoteSigner, NoteVerifier
from projections.merkle._note import (
    Checkpoint,
    checkpoint_body,
    open_note,
    parse_checkpoint,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)
from projections.merkle._store import DDL, MerkleStore, create_tables
from projections.merkle._verify import verify_consistency, verify_inclusion
from projections.merkle._worker import HashWorker, HashWorkerError, start_hash_worker

__all__ = [
    "DDL",
    "EMPTY_ROOT",
    "HASH_SIZE",
    "BadSignatureError",
    "Checkpoint",
    "GetNode",
    "HashWorker",
    "HashWorkerError",
    "MalformedNoteError",
    "MerkleAppender",
    "MerkleError",
    "MerkleStore",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "ProofError",
    "StoreError",
    "TreeSizeError",
    "UnknownKeyError",
    "checkpoint_body",
    "consistency_proof",
    "create_tables",
    "hash_from_hex",
    "inclusion_proof",
    "leaf_hash",
    "leaf_hashes",
    "node_hash",
    "open_note",
    "parse_checkpoint",
    "perfect_root",
    "root_from_leaves",
    "sign_checkpoint",
    "sign_note",
    "start_hash_worker",
    "verify_checkpoint",
    "verify_consistency",
    "verify_inclusion",
]
