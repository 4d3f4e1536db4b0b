"""Event payloads of the credit log, for readers that do not load aggregates.

Each stored event has a topic (`module:qualname` of its domain class, fixed forever) and a
msgpack state. Projections, the relay and the audit export decode that state straight into
these Structs, never into the domain classes. Events never forbid unknown fields: a newer
writer may have added some. Every payload carries `timestamp`, the recorded time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec import Struct

LISTING_TOPIC = "hub.credit.domainmodel:Listing"
_LISTING = LISTING_TOPIC


class EventPayload(Struct, kw_only=True):
    timestamp: datetime


class ListingRegistered(EventPayload, kw_only=True):
    subject_id: str
    subject_name: str
    list: str
    domain: str
    severity: str | None
    intent: str | None
    decision_no: str
    legal_basis: str
    facts: str
    region: str
    authority: str
    effective_from: datetime
    effective_until: datetime | None
    notice_until: datetime | None
    digest: str
    origin_hub: str | None = None
    origin_position: int | None = None


class ListingObjected(EventPayload, kw_only=True):
    n: int
    grounds: str
    received_at: datetime
    answer_due: datetime


class ListingObjectionResolved(EventPayload, kw_only=True):
    n: int
    upheld: bool
    answer: str


class ListingTookEffect(EventPayload, kw_only=True):
    effective_at: datetime


class ListingAmended(EventPayload, kw_only=True):
    changes: dict[str, Any]
    note: str
    applies_from: datetime


class ListingDelisted(EventPayload, kw_only=True):
    reason: str
    note: str
    effective_at: datetime


class ListingPublicationEnded(EventPayload, kw_only=True):
    ended_at: datetime


class EventType(Struct, frozen=True):
    """How a topic is named on the wire and which Struct decodes it."""

    name: str
    payload: type[EventPayload]


EVENT_TYPES: dict[str, EventType] = {
    f"{_LISTING}.Registered": EventType("listing.registered", ListingRegistered),
    f"{_LISTING}.Objected": EventType("listing.objected", ListingObjected),
    f"{_LISTING}.ObjectionResolved": EventType(
        "listing.objection_resolved", ListingObjectionResolved
    ),
    f"{_LISTING}.TookEffect": EventType("listing.took_effect", ListingTookEffect),
    f"{_LISTING}.Amended": EventType("listing.amended", ListingAmended),
    f"{_LISTING}.Delisted": EventType("listing.delisted", ListingDelisted),
    f"{_LISTING}.PublicationEnded": EventType("listing.publication_ended", ListingPublicationEnded),
}

_decoders: dict[str, msgspec.msgpack.Decoder[Any]] = {
    topic: msgspec.msgpack.Decoder(kind.payload) for topic, kind in EVENT_TYPES.items()
}


def register(topic: str, name: str, payload: type[EventPayload]) -> None:
    """Add an event family (commitments, repairs, the catalogue) to the registry."""
    EVENT_TYPES[topic] = EventType(name, payload)
    _decoders[topic] = msgspec.msgpack.Decoder(payload)


def decode_payload(topic: str, state: bytes) -> EventPayload:
    """Decode a stored state by its topic; KeyError for a topic this reader does not know."""
    return _decoders[topic].decode(state)  # type: ignore[no-any-return]


def type_name(topic: str) -> str:
    """The wire name of a topic, or the topic itself when no reader registered it."""
    kind = EVENT_TYPES.get(topic)
    return kind.name if kind else topic


# Event families beyond listings define their payloads in their own `schemas` module and call
# `register()` when imported; importing them here makes every reader of `schemas.events` know
# every topic. Add one line per family (the import must stay at the bottom: they import us).
from schemas import event_families as _families  # noqa: E402

__all__ = ["EVENT_TYPES", "EventPayload", "_families", "decode_payload", "register", "type_name"]
