"""The measure catalogue as an aggregate: one per hub, at a fixed id.

Every change is a `MeasurePut` event carrying the full measure record, so the catalogue's
version (the aggregate version) explains every check that used it. Stored topics are
`hub.credit.catalogue:Catalogue.<Event>`: never move or rename these classes. Time is an
argument: the caller passes its clock's `now`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eventsourcing.domain import Aggregate

from schemas.catalogue_events import CATALOGUE_ID

__all__ = ["CATALOGUE_ID", "Catalogue"]


class Catalogue(Aggregate):
    """The measures by code; each record mirrors `schemas.catalogue.Measure`."""

    def __init__(self) -> None:
        self.measures: dict[str, dict[str, Any]] = {}

    class Created(Aggregate.Created):
        pass

    @classmethod
    def create(cls, *, now: datetime) -> Catalogue:
        return cls._create(cls.Created, id=CATALOGUE_ID, timestamp=now)

    def put(self, measure: dict[str, Any], *, now: datetime) -> bool:
        """Create or replace a measure; False (and no event) when it is unchanged."""
        if self.measures.get(measure["code"]) == measure:
            return False
        self.trigger_event(self.MeasurePut, measure=measure, timestamp=now)
        return True

    class MeasurePut(Aggregate.Event):
        measure: dict[str, Any]

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Catalogue)  # noqa: S101 - the event belongs to Catalogue
            aggregate.measures[self.measure["code"]] = dict(self.measure)
