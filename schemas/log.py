"""The credit log as readers outside the domain see it: raw stored events and their public
form (`LogEvent`), shared by the API, projections, the relay and the audit export.

An event's `id` is a UUID derived from (aggregate id, version), so it is the same wherever
the event travels (JetStream's `Nats-Msg-Id`, the CloudEvents `id`, webhook ids).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from msgspec import Struct

from schemas.codec import decode_state
from schemas.events import type_name

_HIDDEN = frozenset({"timestamp", "originator_topic", "class_version"})


class RawEvent(Struct, frozen=True, gc=False):
    """A stored event as read from the log (a Struct: built per row, so it must be cheap)."""

    position: int
    originator_id: UUID
    version: int
    topic: str
    state: bytes


class LogEvent(Struct):
    """One event of the credit log as the API shows it."""

    position: int
    id: str
    type: str
    time: datetime
    aggregate_id: str
    version: int
    data: dict[str, Any]


class EventPage(Struct):
    events: list[LogEvent]
    next_after: int


def event_id(originator_id: UUID, version: int) -> str:
    return str(uuid5(originator_id, str(version)))


def to_log_event(raw: RawEvent) -> LogEvent:
    state = decode_state(raw.state)
    return LogEvent(
        position=raw.position,
        id=event_id(raw.originator_id, raw.version),
        type=type_name(raw.topic),
        time=state["timestamp"],
        aggregate_id=str(raw.originator_id),
        version=raw.version,
        data={k: v for k, v in state.items() if k not in _HIDDEN},
    )
