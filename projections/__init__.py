"""Read models fed from the credit log, each with its tracked position."""

from projections._runner import (
    EVENTS_TABLE,
    Connection,
    Projection,
    ProjectionRunner,
    max_position,
    read_events,
)
from schemas.log import RawEvent

__all__ = [
    "EVENTS_TABLE",
    "Connection",
    "Projection",
    "ProjectionRunner",
    "RawEvent",
    "max_position",
    "read_events",
]
