"""The audit view of the credit log: Merkle tree entries, proofs, tree heads, export lines and
point-in-time (as-of) answers.

The Merkle tree's entry for an event is defined once, here (`entry_bytes`): the canonical JSON
(sorted keys, no white space, UTF-8) of the event with its log position and its stored state,
base64 encoded byte for byte. The export writes exactly these bytes, one entry per line, so an
auditor recomputes a leaf hash as SHA-256(0x00 || line) without any other knowledge.
"""

from __future__ import annotations

import base64
import builtins
from datetime import datetime
from typing import Any

import msgspec
from msgspec import Struct

from schemas.checks import Hit
from schemas.codec import canonical_json
from schemas.log import RawEvent

EXPORT_FORMAT = "credit-hub-audit-export/1"


def entry_fields(raw: RawEvent) -> dict[str, Any]:
    return {
        "aggregate_id": str(raw.originator_id),
        "position": raw.position,
        "state": base64.b64encode(raw.state).decode(),
        "topic": raw.topic,
        "version": raw.version,
    }


def entry_reference(raw: RawEvent) -> bytes:
    """The definition of an entry: the canonical JSON of `entry_fields`."""
    return canonical_json(entry_fields(raw))


def entry_bytes(raw: RawEvent) -> bytes:
    """The Merkle tree entry of one stored event (and its line in an export).

    Byte for byte `entry_reference(raw)`, written out directly because the audit
    projection builds one per event: the keys are fixed and sorted, the id and the base64
    need no escaping, and each topic's JSON string is encoded once."""
    topic = _TOPICS.get(raw.topic)
    if topic is None:
        topic = _TOPICS[raw.topic] = _canonical_str.encode(raw.topic)
    return b"".join(
        (
            b'{"aggregate_id":"',
            str(raw.originator_id).encode(),
            b'","position":',
            str(raw.position).encode(),
            b',"state":"',
            base64.b64encode(raw.state),
            b'","topic":',
            topic,
            b',"version":',
            str(raw.version).encode(),
            b"}",
        )
    )


_TOPICS: dict[str, bytes] = {}
_canonical_str = msgspec.json.Encoder()


class ExportedEvent(Struct, forbid_unknown_fields=True):
    """One line of `events.jsonl` in an export: exactly the fields of `entry_bytes`."""

    aggregate_id: str
    position: int
    state: str
    topic: str
    version: int


class TreeHead(Struct):
    """`GET /v1/audit/tree-head`: the latest signed tree head."""

    tree_size: int
    root_hash: str
    checkpoint: str


class StoredTreeHead(Struct):
    """A signed tree head as stored and exported (`tree_heads.jsonl`)."""

    tree_size: int
    root_hash: str
    checkpoint: str
    created_at: datetime


class PublicKey(Struct):
    """`GET /v1/audit/public-key`: the log's origin and its note verifier key."""

    origin: str
    key: str


class InclusionProof(Struct):
    leaf_index: int
    tree_size: int
    entry: str
    leaf_hash: str
    audit_path: list[str]
    position: int


class ConsistencyProof(Struct):
    first: int
    second: int
    proof: list[str]


class ExportManifest(Struct):
    """`manifest.json` of an export."""

    format: str
    origin: str
    public_key: str
    tree_size: int
    root_hash: str
    events: int
    tree_heads: int
    exported_at: datetime


class ListingAsOf(Struct, kw_only=True):
    """A listing as it stood at an effective time, as known at a recorded time."""

    listing_id: str
    subject_id: str
    subject_name: str
    list: str
    domain: str
    severity: str | None
    intent: str | None
    region: str
    authority: str
    decision_no: str
    effective_from: datetime
    effective_until: datetime | None
    valid_from: datetime
    valid_to: datetime | None
    recorded_position: int


class ListAsOf(Struct):
    """`GET /v1/lists/{list}?as_of=`: the listings in force on a list at a moment."""

    list: str
    as_of: datetime
    known_at_position: int | None
    known_at_time: datetime | None
    listings: builtins.list[ListingAsOf]
    next_after: str | None


class CheckReplay(Struct, kw_only=True):
    """`GET /v1/checks/{check_id}/replay`: the answer re-derived from the log, beside the
    recorded one. `tree_size` is the audit tree's size at the check's position."""

    check_id: str
    position: int
    tree_size: int
    catalogue_version: int
    checked_at: datetime
    matches: bool
    differences: builtins.list[str]
    recorded_decision: str
    replayed_decision: str
    recorded_hits: builtins.list[Hit]
    replayed_hits: builtins.list[Hit]
