"""The Report aggregate: one public report (监督举报) routed to the agency responsible.

Lifecycle: filed ──answer──▶ answered. The answer limit (`answer_due`, in working days) is
computed by the service and recorded in `Filed`. Stored topics are
`hub.subject.reports:Report.<Event>`: never move or rename these classes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from hub.errors import Conflict


class Report(Aggregate):
    def __init__(
        self,
        *,
        kind: str,
        content: str,
        agency: str,
        listing_id: str | None,
        subject_id: str | None,
        subject_name: str | None,
        contact: str | None,
        received_at: datetime,
        answer_due: datetime,
    ) -> None:
        self.kind = kind
        self.content = content
        self.agency = agency
        self.listing_id = listing_id
        self.subject_id = subject_id
        self.subject_name = subject_name
        self.contact = contact
        self.received_at = received_at
        self.answer_due = answer_due
        self.status = "filed"
        self.answer: dict[str, Any] | None = None

    class Filed(Aggregate.Created):
        kind: str
        content: str
        agency: str
        listing_id: str | None
        subject_id: str | None
        subject_name: str | None
        contact: str | None
        received_at: datetime
        answer_due: datetime

    @classmethod
    def file(cls, *, report_id: UUID, now: datetime, **fields: Any) -> Report:
        return cls._create(cls.Filed, id=report_id, timestamp=now, **fields)

    def answer_with(self, *, by: str, answer: str, upheld: bool, now: datetime) -> None:
        if self.status != "filed":
            raise Conflict("the report is already answered", rule="report.answered")
        self.trigger_event(self.Answered, by=by, answer=answer, upheld=upheld, timestamp=now)

    class Answered(Aggregate.Event):
        by: str
        answer: str
        upheld: bool

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Report)  # noqa: S101 - the event belongs here
            aggregate.status = "answered"
            aggregate.answer = {
                "by": self.by,
                "answer": self.answer,
                "upheld": self.upheld,
                "at": self.timestamp,
            }
