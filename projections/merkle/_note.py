"""Signed notes (c2sp.org/signed-note) and checkpoints (c2sp.org/tlog-checkpoint).

A checkpoint note, byte for byte:

    <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n
    \\n
    \u2014 <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>\\n

The signature covers the text up to and including its last newline, not the blank line. When
opening a note, signatures by unknown keys are ignored (they allow key rotation and witness
cosignatures), a signature by a trusted key that fails is fatal, and at least one trusted
signature must verify: the same rules as Go's `note.Open`, so notes signed here open there and
the other way round.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

from projections.merkle._errors import (
    BadSignatureError,
    MalformedNoteError,
    NoteError,
    UnknownKeyError,
)
from projections.merkle._hashing import HASH_SIZE
from projections.merkle._keys import NoteSigner, NoteVerifier, b64decode_strict, valid_key_name

MAX_SIGNATURES = 100
_KEY_ID_SIZE = 4
_CHECKPOINT_LINES = 3  # origin, size, root
_SIG_PREFIX = "\u2014 "
_SIZE = re.compile(r"0|[1-9][0-9]*")
_MAX_SIZE = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's tree head: the origin (log identity), tree size and root hash."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def _check_text(text: str) -> bytes:
    if any(ch < " " and ch != "\n" for ch in text):
        raise MalformedNoteError("a note holds no control characters other than newline")
    try:
        return text.encode()
    except UnicodeEncodeError as exc:
        raise MalformedNoteError("a note is valid UTF-8") from exc


def sign_note(text: str, *signers: NoteSigner) -> str:
    """The signed note: `text` (ending in a newline), a blank line, one line per signer."""
    if not text.endswith("\n"):
        raise MalformedNoteError("note text must end with a newline")
    if not signers:
        raise NoteError("a note needs at least one signer")
    message = _check_text(text)
    lines = []
    for signer in signers:
        signature = signer.key_hash.to_bytes(_KEY_ID_SIZE, "big") + signer.sign(message)
        lines.append(f"{_SIG_PREFIX}{signer.name} {base64.b64encode(signature).decode()}\n")
    return text + "\n" + "".join(lines)


def open_note(
    note: str | bytes, verifiers: Iterable[NoteVerifier]
) -> tuple[str, tuple[NoteVerifier, ...]]:
    """Verify a signed note; return its text and the trusted keys that signed it."""
    text, lines = _split_note(note)
    known = _by_name_and_hash(verifiers)
    message = text.encode()
    signed: dict[tuple[str, int], NoteVerifier] = {}
    seen_names: list[str] = []
    for line in lines:
        name, key_id, signature = _parse_signature_line(line)
        seen_names.append(name)
        trusted = known.get((name, key_id))
        if trusted is None or (name, key_id) in signed:
            continue  # unknown keys are ignored; so are repeats
        if not trusted.verify(message, signature):
            raise BadSignatureError(f"signature by {name}+{key_id:08x} does not verify")
        signed[name, key_id] = trusted
    if not signed:
        raise UnknownKeyError(f"no signature by a trusted key (signed by: {seen_names})")
    return text, tuple(signed.values())


def _split_note(note: str | bytes) -> tuple[str, list[str]]:
    if isinstance(note, bytes):
        try:
            note = note.decode()
        except UnicodeDecodeError as exc:
            raise MalformedNoteError("a note is valid UTF-8") from exc
    _check_text(note)
    split = note.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("no blank line between the note text and its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNoteError("the signature lines must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"more than {MAX_SIGNATURES} signatures")
    return text, lines


def _by_name_and_hash(verifiers: Iterable[NoteVerifier]) -> dict[tuple[str, int], NoteVerifier]:
    known: dict[tuple[str, int], NoteVerifier] = {}
    for verifier in verifiers:
        if known.setdefault((verifier.name, verifier.key_hash), verifier) != verifier:
            raise NoteError(f"two trusted keys share name and hash {verifier.name}")
    return known


def _parse_signature_line(line: str) -> tuple[str, int, bytes]:
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNoteError("a signature line starts with an em dash and a space")
    name, space, encoded = line[len(_SIG_PREFIX) :].partition(" ")
    if not space or not encoded or not valid_key_name(name):
        raise MalformedNoteError(f"malformed signature line {line[:80]!r}")
    raw = b64decode_strict(encoded, "signature")
    if len(raw) <= _KEY_ID_SIZE:
        raise MalformedNoteError("a signature is a 4-byte key hash and the signature bytes")
    return name, int.from_bytes(raw[:_KEY_ID_SIZE], "big"), raw[_KEY_ID_SIZE:]


def checkpoint_body(origin: str, size: int, root: bytes, extensions: Iterable[str] = ()) -> str:
    """The checkpoint's note text, checked so that it parses back to the same values."""
    if not origin or "\n" in origin:
        raise MalformedNoteError("the origin is one non-empty line")
    if isinstance(size, bool) or not 0 <= size <= _MAX_SIZE:
        raise MalformedNoteError(f"tree size {size!r} is not a 64-bit unsigned integer")
    if len(root) != HASH_SIZE:
        raise MalformedNoteError("the root hash is 32 bytes")
    lines = [origin, str(size), base64.b64encode(root).decode(), *extensions]
    if any(not line or "\n" in line for line in lines[3:]):
        raise MalformedNoteError("extension lines are non-empty single lines")
    text = "\n".join(lines) + "\n"
    _check_text(text)
    return text


def parse_checkpoint(text: str) -> Checkpoint:
    if not text.endswith("\n"):
        raise MalformedNoteError("a checkpoint ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < _CHECKPOINT_LINES:
        raise MalformedNoteError("a checkpoint has an origin, a size and a root line")
    origin, size, root_b64, *extensions = lines
    if not origin:
        raise MalformedNoteError("the origin line is empty")
    if not _SIZE.fullmatch(size) or int(size) > _MAX_SIZE:
        raise MalformedNoteError(f"tree size {size[:40]!r} is not canonical decimal")
    root = b64decode_strict(root_b64, "root hash")
    if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_b64:
        raise MalformedNoteError("the root hash is the base64 of 32 bytes")
    if any(not line for line in extensions):
        raise MalformedNoteError("extension lines are non-empty")
    return Checkpoint(origin, int(size), root, tuple(extensions))


def sign_checkpoint(signer: NoteSigner, origin: str, size: int, root: bytes) -> str:
    """A signed tree head; by convention `origin` equals the signer's key name."""
    return sign_note(checkpoint_body(origin, size, root), signer)


def verify_checkpoint(
    note: str | bytes,
    verifier: NoteVerifier | Iterable[NoteVerifier],
    *,
    origin: str | None = None,
) -> Checkpoint:
    """Open a checkpoint note signed by `verifier` (or one of several); check its origin.

    Raises BadSignatureError, UnknownKeyError or MalformedNoteError; a NoteError when the
    checkpoint is for another origin than the one expected.
    """
    verifiers = (verifier,) if isinstance(verifier, NoteVerifier) else tuple(verifier)
    text, _ = open_note(note, verifiers)
    checkpoint = parse_checkpoint(text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"checkpoint is for origin {checkpoint.origin!r}, not {origin!r}")
    return checkpoint
