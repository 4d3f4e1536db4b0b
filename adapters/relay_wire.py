"""The relay's fast path from a stored event to its NATS message.

It produces what `adapters.cloudevents` (`to_cloudevent`, `subject_for`, `encode`) produces
from a `schemas.log.LogEvent`, and a unit test holds the two equal; but it goes straight from
the stored msgpack state to the JSON envelope, with no intermediate structs, type names and
subject tokens cached, and the event id computed without building a `uuid.UUID`. The relay's
own cost per event is what stands between it and raw publishing, so it is kept small here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import msgspec

from adapters import cloudevents as ce
from schemas.events import type_name

_encoder = msgspec.json.Encoder()


class Outgoing(NamedTuple):
    """One message for the stream: its log position, event id, subject and payload."""

    position: int
    id: str
    subject: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Kind:
    type: str
    family: str
    event: str


_kinds: dict[str, Kind] = {}
_tokens: dict[str, str] = {}
_MAX_TOKENS = 100_000


def kind_of(topic: str) -> Kind:
    kind = _kinds.get(topic)
    if kind is None:
        name = type_name(topic)
        family, event = ce.split_type(name)
        kind = _kinds[topic] = Kind(ce.TYPE_PREFIX + name, family, event)
    return kind


def _token(value: str) -> str:
    token = _tokens.get(value)
    if token is None:
        if len(_tokens) > _MAX_TOKENS:  # regions and lists are few; never grow without bound
            _tokens.clear()
        token = _tokens[value] = ce.token(value)
    return token


def fast_event_id(originator_id: UUID, version: int) -> str:
    """`schemas.log.event_id` (uuid5 of the aggregate id and version), computed directly."""
    digest = bytearray(hashlib.sha1(originator_id.bytes + str(version).encode()).digest()[:16])  # noqa: S324 - uuid5 is SHA-1 by definition
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def registration_context(state: dict[str, Any]) -> ce.ListingContext | None:
    """The routing context a listing's registration carries in its stored state."""
    if "list" in state and "subject_id" in state:
        return ce.ListingContext(
            str(state["subject_id"]),
            str(state["list"]),
            str(state.get("region") or ce.NO_REGION),
            str(state.get("domain") or ""),
        )
    return None


def outgoing(  # noqa: PLR0917 - the columns of one stored row, in the hot loop
    position: int,
    originator_id: UUID,
    version: int,
    topic: str,
    state: dict[str, Any],
    context: ce.ListingContext | None,
    prefix: str,
    source: str,
) -> Outgoing:
    """The message for one stored event; `state` is its decoded state, which this consumes."""
    kind = kind_of(topic)
    time: datetime = state.pop("timestamp")
    state.pop("originator_topic", None)
    state.pop("class_version", None)
    aggregate_id = str(originator_id)
    state["position"] = position
    state["aggregate_id"] = aggregate_id
    state["version"] = version
    if context is not None and "list" not in state:  # a registration carries its own
        state["subject_id"] = context.subject_id
        state["list"] = context.list
        state["region"] = context.region
        state["domain"] = context.domain
    if kind.family == ce.LISTING_FAMILY and context is not None:
        subject = f"{prefix}.{_token(context.list)}.{kind.event}.{_token(context.region)}"
    else:
        region = state.get("region")
        subject = f"{prefix}.{kind.family}.{kind.event}.{_token(str(region)) if region else '_'}"
    event_id = fast_event_id(originator_id, version)
    envelope = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": kind.type,
        "subject": context.subject_id if context is not None else aggregate_id,
        "time": time,
        "datacontenttype": "application/json",
        "data": state,
    }
    return Outgoing(position, event_id, subject, _encoder.encode(envelope))
