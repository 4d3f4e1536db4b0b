"""Signed tree heads as C2SP signed notes: a golden vector derived from the spec's byte layout,
interop vectors from Go (golang.org/x/mod/sumdb/note and the live sum.golang.org log),
round trips, and tampering."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from projections.merkle import (
    BadSignatureError,
    Checkpoint,
    MalformedNoteError,
    NoteError,
    NoteSigner,
    NoteVerifier,
    UnknownKeyError,
    checkpoint_body,
    open_note,
    parse_checkpoint,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)

SEED = bytes(range(32))
NAME = "example.com/credit-hub"
ROOT = hashlib.sha256(b"credit hub").digest()
SIZE = 1234567

# Pinned once from the byte layout below (test_golden_vector_from_the_spec_layout rebuilds it).
GOLDEN_VKEY = "example.com/credit-hub+695de87a+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4"
GOLDEN_SKEY = (
    "PRIVATE+KEY+example.com/credit-hub+695de87a+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f"
)
GOLDEN_NOTE = (
    "example.com/credit-hub\n"
    "1234567\n"
    "CQl+2Cdn6Dvqub22gt2fLUD1kQW88mQ9PLWG82zzcZQ=\n"
    "\n"
    "\u2014 example.com/credit-hub aV3oegCoPbuE2zLl+KYk/79RFuHZdUE3f0QIfIog/7Lm/bLwQBW/Lp4UY3Aa"
    "LZrQt/EphgzJ+SBg2l6pgkrCKNsB5Ao=\n"
)

# golang.org/x/mod/sumdb/note package documentation (BSD-3-Clause, The Go Authors).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

# A checkpoint signed by the Go checksum database, and its key from cmd/go (modfetch/key.go).
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n65664258\nWVVNVD2qx+fTq31zkj6UAqxT5X6HvGphGM+o8Thnbsg=\n\n"
    "\u2014 sum.golang.org Az3grligJmgX7KGyGPKybykNTh3VgsbLvUuvOwrM5zLVlulmFp2wdvbxOw74/gcNxURSh"
    "XEpb7RXcs3+BYflYN+w0gQ=\n"
)


def test_golden_vector_from_the_spec_layout():
    private = Ed25519PrivateKey.from_private_bytes(SEED)
    public = private.public_key().public_bytes_raw()
    # key hash = SHA-256(name || 0x0A || 0x01 || public key)[:4]
    key_hash = hashlib.sha256(NAME.encode() + b"\n" + b"\x01" + public).digest()[:4]
    vkey = f"{NAME}+{key_hash.hex()}+" + base64.b64encode(b"\x01" + public).decode()
    skey = f"PRIVATE+KEY+{NAME}+{key_hash.hex()}+" + base64.b64encode(b"\x01" + SEED).decode()
    body = f"{NAME}\n{SIZE}\n" + base64.b64encode(ROOT).decode() + "\n"
    signature = base64.b64encode(key_hash + private.sign(body.encode())).decode()
    note = body + "\n" + "\u2014 " + NAME + " " + signature + "\n"
    assert (vkey, skey, note) == (GOLDEN_VKEY, GOLDEN_SKEY, GOLDEN_NOTE)

    signer = NoteSigner(NAME, SEED)
    assert signer.verifier.key == GOLDEN_VKEY
    assert signer.private_key() == GOLDEN_SKEY
    assert signer.key_hash == 0x695DE87A
    assert checkpoint_body(NAME, SIZE, ROOT) == body
    assert sign_checkpoint(signer, NAME, SIZE, ROOT) == GOLDEN_NOTE
    assert sign_checkpoint(NoteSigner.from_key(GOLDEN_SKEY), NAME, SIZE, ROOT) == GOLDEN_NOTE
    verifier = NoteVerifier.from_key(GOLDEN_VKEY)
    assert verify_checkpoint(GOLDEN_NOTE, verifier, origin=NAME) == Checkpoint(NAME, SIZE, ROOT)


def test_go_note_package_vector():
    signer = NoteSigner.from_key(GO_SKEY)
    assert signer.verifier.key == GO_VKEY
    assert sign_note(GO_TEXT, signer) == GO_NOTE
    text, signed_by = open_note(GO_NOTE, [NoteVerifier.from_key(GO_VKEY)])
    assert text == GO_TEXT
    assert [v.name for v in signed_by] == ["PeterNeumann"]


def test_a_checkpoint_signed_by_the_go_checksum_database():
    verifier = NoteVerifier.from_key(SUMDB_VKEY)
    assert verifier.key == SUMDB_VKEY
    checkpoint = verify_checkpoint(SUMDB_NOTE.encode(), verifier, origin="go.sum database tree")
    assert checkpoint.size == 65664258
    assert checkpoint.root.hex() == (
        "59554d543daac7e7d3ab7d73923e9402ac53e57e87bc6a6118cfa8f138676ec8"
    )
    with pytest.raises(BadSignatureError):
        verify_checkpoint(SUMDB_NOTE.replace("65664258", "65664259"), verifier)
    with pytest.raises(NoteError, match="origin"):
        verify_checkpoint(SUMDB_NOTE, verifier, origin="example.com/other")


def test_round_trip_with_a_generated_key_and_a_cosigner():
    log_key, witness = (
        NoteSigner.generate("hub.example/log"),
        NoteSigner.generate("witness.example"),
    )
    root = hashlib.sha256(b"x").digest()
    note = sign_note(checkpoint_body("hub.example/log", 0, root), log_key, witness)
    assert note.count("\n\u2014 ") == 2
    assert verify_checkpoint(note, log_key.verifier) == Checkpoint("hub.example/log", 0, root)
    assert verify_checkpoint(note, [witness.verifier]).size == 0
    # A signature by an unknown key is ignored, not fatal.
    stranger = NoteSigner.generate("hub.example/log")
    assert (
        verify_checkpoint(note, [stranger.verifier, log_key.verifier]).origin == "hub.example/log"
    )
    with pytest.raises(UnknownKeyError):
        verify_checkpoint(note, stranger.verifier)
    assert "PRIVATE" not in repr(log_key)
    assert NoteSigner.from_key(log_key.private_key()).verifier == log_key.verifier


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("1234567", "1234568"),  # the size
        ("CQl+", "CQl/"),  # the root
        ("example.com/credit-hub\n1", "example.com/credit-hug\n1"),  # the origin
        ("aV3oegCo", "aV3oegCp"),  # the signature
    ],
)
def test_tampering_is_caught(old, new):
    tampered = GOLDEN_NOTE.replace(old, new, 1)
    assert tampered != GOLDEN_NOTE
    with pytest.raises(NoteError):
        verify_checkpoint(tampered, NoteVerifier.from_key(GOLDEN_VKEY))


def test_a_changed_key_hash_makes_the_signature_unknown():
    raw = base64.b64decode(GOLDEN_NOTE.rsplit(" ", 1)[1])
    other = base64.b64encode(b"\x00\x00\x00\x00" + raw[4:]).decode() + "\n"
    with pytest.raises(UnknownKeyError):
        verify_checkpoint(
            GOLDEN_NOTE.rsplit(" ", 1)[0] + " " + other, NoteVerifier.from_key(GOLDEN_VKEY)
        )


@pytest.mark.parametrize(
    "note",
    [
        GOLDEN_NOTE.replace("\n\n", "\n"),  # no blank line
        GOLDEN_NOTE[:-1],  # signature line not ended
        GOLDEN_NOTE.replace("\u2014 ", "- "),  # a hyphen is not the em dash
        GOLDEN_NOTE.replace("\u2014 example.com/credit-hub ", "\u2014 example.com/credit-hub"),
        GOLDEN_NOTE.replace("1234567", "01234567"),  # signature fails first, but also not canonical
        GOLDEN_NOTE.replace("hub\n1", "hub\r\n1"),  # control character
        "\u2014 x AAAA\n",
        GOLDEN_NOTE + "trailing\n",
    ],
)
def test_malformed_notes_are_refused(note):
    with pytest.raises(NoteError):
        verify_checkpoint(note, NoteVerifier.from_key(GOLDEN_VKEY))


def test_checkpoint_text_is_strict():
    good = checkpoint_body("o", 5, ROOT)
    assert parse_checkpoint(good) == Checkpoint("o", 5, ROOT)
    assert parse_checkpoint(good + "ext\n").extensions == ("ext",)
    for bad in [
        "o\n5\n",
        "o\n05\n" + good.split("\n")[2] + "\n",
        "o\n-5\n" + good.split("\n")[2] + "\n",
        "\n5\n" + good.split("\n")[2] + "\n",
        "o\n5\nAAAA\n",
        good + "\n",
        good[:-1],
    ]:
        with pytest.raises(MalformedNoteError):
            parse_checkpoint(bad)
    with pytest.raises(MalformedNoteError):
        checkpoint_body("two\nlines", 1, ROOT)
    with pytest.raises(MalformedNoteError):
        checkpoint_body("o", -1, ROOT)
    with pytest.raises(MalformedNoteError):
        checkpoint_body("o", 1, ROOT[:31])
    assert parse_checkpoint(checkpoint_body("o", 2**64 - 1, ROOT)).size == 2**64 - 1


@pytest.mark.parametrize(
    "key",
    [
        "",
        "name+695de87a",
        GOLDEN_VKEY.replace("695de87a", "695de87b"),  # hash of another key
        GOLDEN_VKEY.replace("695de87a", "695de87"),
        GOLDEN_VKEY.replace("+AQ", "+Ag"),  # algorithm 2
        "bad name+695de87a+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
        GOLDEN_VKEY[:-4],
    ],
)
def test_malformed_verifier_keys(key):
    with pytest.raises(MalformedNoteError):
        NoteVerifier.from_key(key)


def test_malformed_signer_keys():
    for key in [
        GOLDEN_SKEY.replace("PRIVATE", "PUBLIC"),
        GOLDEN_SKEY.replace("695de87a", "00000000"),
        GOLDEN_VKEY,
    ]:
        with pytest.raises(MalformedNoteError):
            NoteSigner.from_key(key)
    with pytest.raises(MalformedNoteError):
        NoteSigner("has space", SEED)
    with pytest.raises(MalformedNoteError):
        NoteSigner("ok", SEED[:31])
    with pytest.raises(MalformedNoteError):
        sign_note("no newline", NoteSigner(NAME, SEED))
