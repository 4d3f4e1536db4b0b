"""Ed25519 note keys in the string forms golang.org/x/mod/sumdb/note reads and writes.

verifier key  <name>+<key hash, 8 hex>+<base64(0x01 || 32-byte public key)>
signer key    PRIVATE+KEY+<name>+<key hash, 8 hex>+<base64(0x01 || 32-byte seed)>
key hash      first 4 bytes, big-endian, of SHA-256(name || 0x0A || 0x01 || public key)

Key names are non-empty and contain no Unicode space, no plus and no control character
(c2sp.org/signed-note). A signer never shows its seed in its repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from projections.merkle._errors import MalformedNoteError

ALG_ED25519 = 0x01
_KEY_SIZE = 32
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def valid_key_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(ch.isspace() or ch < " " for ch in name)


def key_hash(name: str, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def b64decode_strict(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedNoteError(f"{what} is not standard base64") from exc


def _parse(name: str, hash_hex: str, key_b64: str, what: str) -> tuple[int, bytes]:
    if not valid_key_name(name):
        raise MalformedNoteError(f"{what}: invalid key name {name!r}")
    if not _HEX8.fullmatch(hash_hex):
        raise MalformedNoteError(f"{what}: the key hash must be 8 hex digits")
    raw = b64decode_strict(key_b64, what)
    if not raw or raw[0] != ALG_ED25519:
        raise MalformedNoteError(f"{what}: only Ed25519 keys (algorithm 0x01) are supported")
    if len(raw) != 1 + _KEY_SIZE:
        raise MalformedNoteError(f"{what}: an Ed25519 key is 32 bytes")
    return int(hash_hex, 16), raw[1:]


@dataclass(frozen=True, slots=True)
class NoteVerifier:
    """A trusted public key: checks signatures made by the matching `NoteSigner`."""

    name: str
    key_hash: int
    public_key: bytes

    def __post_init__(self) -> None:
        if not valid_key_name(self.name):
            raise MalformedNoteError(f"invalid key name {self.name!r}")
        if len(self.public_key) != _KEY_SIZE:
            raise MalformedNoteError("an Ed25519 public key is 32 bytes")
        if self.key_hash != key_hash(self.name, self.public_key):
            raise MalformedNoteError(f"key hash {self.key_hash:08x} is not this key's")

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> NoteVerifier:
        return cls(name, key_hash(name, public_key), public_key)

    @classmethod
    def from_key(cls, vkey: str) -> NoteVerifier:
        """Parse `<name>+<hash>+<base64 key>` (the form `go` and `note.NewVerifier` take)."""
        try:
            name, hash_hex, key_b64 = vkey.split("+", 2)
        except ValueError:
            raise MalformedNoteError("a verifier key reads <name>+<hash>+<key>") from None
        hash_value, public_key = _parse(name, hash_hex, key_b64, "verifier key")
        return cls(name, hash_value, public_key)

    @property
    def key(self) -> str:
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_hash:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


class NoteSigner:
    """An Ed25519 private key under a key name; signs note texts."""

    __slots__ = ("_private", "verifier")

    def __init__(self, name: str, seed: bytes) -> None:
        if len(seed) != _KEY_SIZE:
            raise MalformedNoteError("an Ed25519 seed is 32 bytes")
        self._private = Ed25519PrivateKey.from_private_bytes(seed)
        self.verifier = NoteVerifier.from_public_key(
            name, self._private.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_key(cls, skey: str) -> NoteSigner:
        """Parse `PRIVATE+KEY+<name>+<hash>+<base64 seed>` and check the hash."""
        shape = "a signer key reads PRIVATE+KEY+<name>+<hash>+<key>"
        try:
            private, key, name, hash_hex, key_b64 = skey.split("+", 4)
        except ValueError:
            raise MalformedNoteError(shape) from None
        if (private, key) != ("PRIVATE", "KEY"):
            raise MalformedNoteError(shape)
        hash_value, seed = _parse(name, hash_hex, key_b64, "signer key")
        signer = cls(name, seed)
        if signer.key_hash != hash_value:
            raise MalformedNoteError("signer key: the key hash does not match the key")
        return signer

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def key_hash(self) -> int:
        return self.verifier.key_hash

    def private_key(self) -> str:
        """The signer key string; a secret, for the key store only."""
        seed = self._private.private_bytes_raw()
        encoded = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_hash:08x}+{encoded}"

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:
        return f"NoteSigner({self.name!r}, key_hash={self.key_hash:08x})"
