"""The Commitment aggregate: one credit commitment (信用承诺) under its code.

Lifecycle::

    pending ──fulfil(partly)──▶ partly ──fulfil(fulfilled)──▶ fulfilled
       │                          │
       └──────────breach──────────┴──▶ not_fulfilled (a breach; the breach policy lists it)

The id follows from the code (`commitment_id_for`), so the same code always finds the same
aggregate. Dates are ISO strings in event state. Stored topics are
`hub.subject.commitments:Commitment.<Event>`: never move or rename these classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.errors import Conflict

COMMITMENT_NAMESPACE = uuid5(NAMESPACE_URL, "urn:credit-hub:commitment")
OPEN = frozenset({"pending", "partly"})


def commitment_id_for(code: str) -> UUID:
    return uuid5(COMMITMENT_NAMESPACE, code)


class Commitment(Aggregate):
    def __init__(
        self,
        *,
        code: str,
        committer_name: str,
        committer_category: str,
        committer_code: str,
        type: str,  # noqa: A002 - the wire name of the field
        reason: str,
        content: str,
        liability: str,
        made_on: str,
        valid_until: str | None,
        accepting_agency: str,
        publicity: str,
        domain: str | None,
        digest: str,
    ) -> None:
        self.code = code
        self.committer_name = committer_name
        self.committer_category = committer_category
        self.committer_code = committer_code
        self.type = type
        self.reason = reason
        self.content = content
        self.liability = liability
        self.made_on = made_on
        self.valid_until = valid_until
        self.accepting_agency = accepting_agency
        self.publicity = publicity
        self.domain = domain
        self.digest = digest
        self.status = "pending"
        self.history: list[dict[str, Any]] = []
        self.breach: dict[str, Any] | None = None

    class Made(Aggregate.Created):
        code: str
        committer_name: str
        committer_category: str
        committer_code: str
        type: str
        reason: str
        content: str
        liability: str
        made_on: str
        valid_until: str | None
        accepting_agency: str
        publicity: str
        domain: str | None
        digest: str

    @classmethod
    def make(cls, *, now: datetime, **fields: Any) -> Commitment:
        """A new commitment; `fields` are those of `Made`."""
        return cls._create(cls.Made, id=commitment_id_for(fields["code"]), timestamp=now, **fields)

    def _require_open(self, action: str) -> None:
        if self.status not in OPEN:
            raise Conflict(
                f"commitment {self.code} is {self.status}; it cannot be {action}",
                rule="commitment.closed",
            )

    def fulfil(self, *, status: str, note: str, now: datetime) -> None:
        self._require_open("fulfilled")
        self.trigger_event(self.Fulfilled, status=status, note=note, timestamp=now)

    class Fulfilled(Aggregate.Event):
        status: str
        note: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Commitment)  # noqa: S101 - the event belongs here
            aggregate.status = self.status
            aggregate.history.append({"status": self.status, "note": self.note})

    def breach_by(
        self, *, severity: str, facts: str, domain: str, consequence: str, note: str, now: datetime
    ) -> None:
        self._require_open("breached")
        self.trigger_event(
            self.Breached,
            severity=severity,
            facts=facts,
            domain=domain,
            consequence=consequence,
            note=note,
            timestamp=now,
        )

    class Breached(Aggregate.Event):
        severity: str
        facts: str
        domain: str
        consequence: str
        note: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Commitment)  # noqa: S101
            aggregate.status = "not_fulfilled"
            aggregate.breach = {
                "severity": self.severity,
                "facts": self.facts,
                "domain": self.domain,
                "consequence": self.consequence,
                "note": self.note,
                "at": self.timestamp,
            }
