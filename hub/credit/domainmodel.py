"""The Listing aggregate: one decision document that puts one subject on one list.

Lifecycle::

    noticed ──(window ends, nothing pending)──▶ effective ──▶ (amended)* ──▶ delisted
       │  ▲                                         ▲
       ▼  │ objection rejected                      │ objection rejected after the window
    objected ──(objection upheld)──▶ delisted (objection_upheld)

Stored topics are `hub.credit.domainmodel:Listing.<Event>`: never move or rename these classes.
Time is an argument: the application passes its clock's `now`, never the wall clock.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.errors import Conflict, RuleViolation

LISTING_NAMESPACE = uuid5(NAMESPACE_URL, "urn:credit-hub:listing")
AMENDABLE = frozenset(
    {
        "severity",
        "intent",
        "effective_from",
        "effective_until",
        "legal_basis",
        "facts",
        "subject_name",
    }
)


def listing_id_for(authority: str, decision_no: str) -> UUID:
    """A listing's id follows from its decision: re-sending the decision finds the same id."""
    return uuid5(LISTING_NAMESPACE, f"{authority}\x1f{decision_no}")


class Listing(Aggregate):
    """One listing; its fields mirror `schemas.events.ListingRegistered`."""

    def __init__(
        self,
        *,
        subject_id: str,
        subject_name: str,
        list: str,  # noqa: A002 - the wire name of the field
        domain: str,
        severity: str | None,
        intent: str | None,
        decision_no: str,
        legal_basis: str,
        facts: str,
        region: str,
        authority: str,
        effective_from: datetime,
        effective_until: datetime | None,
        notice_until: datetime | None,
        digest: str,
        origin_hub: str | None = None,
        origin_position: int | None = None,
    ) -> None:
        self.subject_id = subject_id
        self.subject_name = subject_name
        self.list = list
        self.domain = domain
        self.severity = severity
        self.intent = intent
        self.decision_no = decision_no
        self.legal_basis = legal_basis
        self.facts = facts
        self.region = region
        self.authority = authority
        self.effective_from = effective_from
        self.effective_until = effective_until
        self.notice_until = notice_until
        self.digest = digest
        self.origin_hub = origin_hub
        self.origin_position = origin_position
        self.status = "noticed" if notice_until is not None else "effective"
        self.objections: builtins.list[dict[str, Any]] = []
        self.delist_reason: str | None = None
        self.delisted_at: datetime | None = None

    class Registered(Aggregate.Created):
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
        origin_hub: str | None
        origin_position: int | None

    @classmethod
    def register(cls, *, listing_id: UUID, now: datetime, **fields: Any) -> Listing:
        """A new listing; `fields` are those of `Registered`."""
        return cls._create(cls.Registered, id=listing_id, timestamp=now, **fields)

    # -- reading -------------------------------------------------------------------------

    @property
    def pending_objections(self) -> builtins.list[dict[str, Any]]:
        return [o for o in self.objections if not o["resolved"]]

    def status_at(self, now: datetime) -> str:
        """The status as of `now`: a notice window that ended with nothing pending is effective."""
        if (
            self.status == "noticed"
            and self.notice_until is not None
            and self.notice_until <= now
            and not self.pending_objections
        ):
            return "effective"
        return self.status

    def in_force_at(self, now: datetime) -> bool:
        """Whether the listing applies at `now`: effective, started, and not yet expired."""
        if self.status_at(now) != "effective" or self.effective_from > now:
            return False
        return self.effective_until is None or now < self.effective_until

    # -- commands ------------------------------------------------------------------------

    def _require_open(self, action: str) -> None:
        if self.status == "delisted":
            raise Conflict(
                f"listing is delisted ({self.delist_reason}); it cannot be {action}",
                rule="listing.delisted",
            )

    def object(
        self, *, grounds: str, received_at: datetime, answer_due: datetime, now: datetime
    ) -> int:
        self._require_open("objected to")
        if self.notice_until is None or received_at > self.notice_until:
            raise RuleViolation(
                "objections are received within the notice window, which has closed"
                if self.notice_until
                else "this listing was registered without a notice window",
                rule="objection.window_closed",
            )
        n = len(self.objections) + 1
        self.trigger_event(
            self.Objected,
            n=n,
            grounds=grounds,
            received_at=received_at,
            answer_due=answer_due,
            timestamp=now,
        )
        return n

    class Objected(Aggregate.Event):
        n: int
        grounds: str
        received_at: datetime
        answer_due: datetime

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Listing)  # noqa: S101 - the event belongs to Listing
            aggregate.objections.append(
                {
                    "n": self.n,
                    "grounds": self.grounds,
                    "received_at": self.received_at,
                    "answer_due": self.answer_due,
                    "resolved": False,
                    "upheld": None,
                    "answer": None,
                }
            )
            aggregate.status = "objected"

    def resolve_objection(self, *, n: int, upheld: bool, answer: str, now: datetime) -> None:
        self._require_open("answered")
        found = [o for o in self.objections if o["n"] == n]
        if not found:
            raise RuleViolation(f"objection {n} does not exist", rule="objection.unknown")
        if found[0]["resolved"]:
            raise Conflict(f"objection {n} is already resolved", rule="objection.resolved")
        self.trigger_event(self.ObjectionResolved, n=n, upheld=upheld, answer=answer, timestamp=now)
        if upheld:
            self.trigger_event(
                self.Delisted,
                reason="objection_upheld",
                note=answer,
                effective_at=self.effective_from,
                timestamp=now,
            )

    class ObjectionResolved(Aggregate.Event):
        n: int
        upheld: bool
        answer: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Listing)  # noqa: S101
            for objection in aggregate.objections:
                if objection["n"] == self.n:
                    objection.update(resolved=True, upheld=self.upheld, answer=self.answer)
            if not aggregate.pending_objections and aggregate.status == "objected":
                aggregate.status = "noticed"

    def take_effect(self, *, now: datetime) -> bool:
        """Record that the notice window ended; False when there is nothing to record."""
        if self.status != "noticed" or self.status_at(now) != "effective":
            return False
        self.trigger_event(self.TookEffect, effective_at=self.notice_until, timestamp=now)
        return True

    class TookEffect(Aggregate.Event):
        effective_at: datetime

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Listing)  # noqa: S101
            aggregate.status = "effective"

    def amend(
        self, *, changes: dict[str, Any], note: str, applies_from: datetime, now: datetime
    ) -> None:
        self._require_open("amended")
        unknown = set(changes) - AMENDABLE
        if unknown:
            raise RuleViolation(f"cannot amend {sorted(unknown)}", rule="amend.fields")
        real = {k: v for k, v in changes.items() if getattr(self, k) != v}
        if not real:
            raise RuleViolation("the amendment changes nothing", rule="amend.no_change")
        self.trigger_event(
            self.Amended, changes=real, note=note, applies_from=applies_from, timestamp=now
        )

    class Amended(Aggregate.Event):
        changes: dict[str, Any]
        note: str
        applies_from: datetime

        def apply(self, aggregate: Aggregate) -> None:
            for key, value in self.changes.items():
                setattr(aggregate, key, value)

    def delist(self, *, reason: str, note: str, effective_at: datetime, now: datetime) -> None:
        self._require_open("delisted again")
        self.trigger_event(
            self.Delisted, reason=reason, note=note, effective_at=effective_at, timestamp=now
        )

    class Delisted(Aggregate.Event):
        reason: str
        note: str
        effective_at: datetime

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Listing)  # noqa: S101
            aggregate.status = "delisted"
            aggregate.delist_reason = self.reason
            aggregate.delisted_at = self.effective_at

    # -- publication end (added for the subject side; see hub/subject/publication.py) -----

    publication_ended_at: datetime | None = None

    def end_publication(self, *, ended_at: datetime, now: datetime) -> bool:
        """Record that the maximum publication period ended; False when nothing to record.

        Publication stops by itself (public view, sharing); a listing still in force (a
        permanent market ban) keeps its status: only its publication ends.
        """
        if self.status == "delisted" or self.publication_ended_at is not None or ended_at > now:
            return False
        self.trigger_event(self.PublicationEnded, ended_at=ended_at, timestamp=now)
        return True

    class PublicationEnded(Aggregate.Event):
        ended_at: datetime

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Listing)  # noqa: S101
            aggregate.publication_ended_at = self.ended_at
