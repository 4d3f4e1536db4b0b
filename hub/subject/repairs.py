"""The RepairCase aggregate: one application for credit repair (信用修复) of one listing.

Lifecycle::

    applied ──accept──▶ accepted ──approve──▶ approved (the listing is delisted: `repaired`)
       │                   └──────deny─────▶ denied
       └──reject (incomplete)──▶ rejected

A listing may have several cases over time, one open at a time; case n of a listing has the
id `repair_id_for(listing_id, n)`, so concurrent applications collide on the log's key rather
than opening two cases. Deadlines are computed by the service (working days) and recorded in
`Applied`. Stored topics are `hub.subject.repairs:RepairCase.<Event>`: never rename them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.errors import Conflict

REPAIR_NAMESPACE = uuid5(NAMESPACE_URL, "urn:credit-hub:repair")
OPEN = frozenset({"applied", "accepted"})
_NEXT = {
    "accept": ("applied", "accepted"),
    "reject": ("applied", "rejected"),
    "approve": ("accepted", "approved"),
    "deny": ("accepted", "denied"),
}


def repair_id_for(listing_id: UUID, n: int) -> UUID:
    return uuid5(REPAIR_NAMESPACE, f"{listing_id}\x1f{n}")


class RepairCase(Aggregate):
    def __init__(
        self,
        *,
        listing_id: str,
        subject_id: str,
        authority: str,
        filed_by: str,
        materials: list[dict[str, Any]],
        commitment_code: str | None,
        training_certificate: str | None,
        received_at: datetime,
        decision_due: datetime,
        answer_due: datetime,
        digest: str,
    ) -> None:
        self.listing_id = listing_id
        self.subject_id = subject_id
        self.authority = authority
        self.filed_by = filed_by
        self.materials = materials
        self.commitment_code = commitment_code
        self.training_certificate = training_certificate
        self.received_at = received_at
        self.decision_due = decision_due
        self.answer_due = answer_due
        self.digest = digest
        self.status = "applied"
        self.decisions: list[dict[str, Any]] = []

    class Applied(Aggregate.Created):
        listing_id: str
        subject_id: str
        authority: str
        filed_by: str
        materials: list[dict[str, Any]]
        commitment_code: str | None
        training_certificate: str | None
        received_at: datetime
        decision_due: datetime
        answer_due: datetime
        digest: str

    @classmethod
    def apply_for(cls, *, repair_id: UUID, now: datetime, **fields: Any) -> RepairCase:
        return cls._create(cls.Applied, id=repair_id, timestamp=now, **fields)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN

    def decide(self, action: str, *, by: str, reason: str, now: datetime) -> None:
        """`accept`, `reject`, `approve` or `deny`, each from its one allowed state."""
        before, after = _NEXT[action]
        if self.status != before:
            raise Conflict(
                f"the repair case is {self.status}; only a case that is {before} can be {after}",
                rule=f"repair.{action}.state",
            )
        event = {
            "accept": self.Accepted,
            "reject": self.Rejected,
            "approve": self.Approved,
            "deny": self.Denied,
        }[action]
        self.trigger_event(event, by=by, reason=reason, timestamp=now)

    class _Decided(Aggregate.Event):
        by: str
        reason: str
        outcome = ""

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, RepairCase)  # noqa: S101 - the event belongs here
            aggregate.status = self.outcome
            aggregate.decisions.append(
                {"status": self.outcome, "by": self.by, "reason": self.reason, "at": self.timestamp}
            )

    class Accepted(_Decided):
        outcome = "accepted"

    class Rejected(_Decided):
        outcome = "rejected"

    class Approved(_Decided):
        outcome = "approved"

    class Denied(_Decided):
        outcome = "denied"
