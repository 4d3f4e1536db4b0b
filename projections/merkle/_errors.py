"""Errors of the Merkle tree package: one root, caught at the API boundary.

MerkleError
├── ProofError            a proof is malformed or does not verify
├── TreeSizeError         an index or tree size outside the stored tree (or below zero)
├── StoreError            stored rows break an invariant (a second writer, a rewritten leaf)
└── NoteError             a signed note or a key string is unusable
    ├── MalformedNoteError    not a signed note / checkpoint / key in the C2SP format
    ├── UnknownKeyError       no signature from any of the trusted keys
    └── BadSignatureError     a trusted key's signature does not verify

`TreeSizeError` is also a `ValueError`, so callers that validate input with `except ValueError`
keep working; the API maps it to 400 (bad index) or 404 (a size the log has not reached).
"""

from __future__ import annotations


class MerkleError(Exception):
    """Root of every error raised by `projections.merkle`."""


class ProofError(MerkleError):
    """A Merkle proof is malformed or does not lead to the expected root."""


class TreeSizeError(MerkleError, ValueError):
    """A leaf index or tree size is negative, out of order, or beyond the stored tree."""


class StoreError(MerkleError):
    """The stored tree breaks an invariant: it is append-only and has one writer."""


class NoteError(MerkleError):
    """A signed note, checkpoint or key string cannot be used."""


class MalformedNoteError(NoteError):
    """The text is not a well-formed signed note, checkpoint or key string."""


class UnknownKeyError(NoteError):
    """The note carries no signature from any trusted key."""


class BadSignatureError(NoteError):
    """A signature by a trusted key (same name and key hash) fails to verify."""
