"""Event payloads of the subject's side: credit commitments, repair cases and public reports.

Stored topics are `hub.subject.<module>:<Aggregate>.<Event>` and never change. Readers outside
the domain (the subject projection, the relay, the audit export) decode stored state into these
Structs by topic. Events never forbid unknown fields. Identifiers inside state are strings.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from schemas.events import EventPayload, register

COMMITMENT_TOPIC = "hub.subject.commitments:Commitment"
REPAIR_TOPIC = "hub.subject.repairs:RepairCase"
REPORT_TOPIC = "hub.subject.reports:Report"


class CommitmentMade(EventPayload, kw_only=True):
    code: str
    committer_name: str
    committer_category: str
    committer_code: str
    type: str
    reason: str
    content: str
    liability: str
    made_on: date
    valid_until: date | None
    accepting_agency: str
    publicity: str
    domain: str | None = None
    digest: str = ""


class CommitmentFulfilled(EventPayload, kw_only=True):
    status: str
    note: str


class CommitmentBreached(EventPayload, kw_only=True):
    severity: str
    facts: str
    domain: str
    consequence: str
    note: str = ""


class RepairApplied(EventPayload, kw_only=True):
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
    digest: str = ""


class RepairDecided(EventPayload, kw_only=True):
    """Accepted, Rejected, Approved and Denied all carry the deciding agency and its reason."""

    by: str
    reason: str


class ReportFiled(EventPayload, kw_only=True):
    kind: str
    content: str
    agency: str
    listing_id: str | None
    subject_id: str | None
    subject_name: str | None
    contact: str | None
    received_at: datetime
    answer_due: datetime


class ReportAnswered(EventPayload, kw_only=True):
    by: str
    answer: str
    upheld: bool


_EVENTS: tuple[tuple[str, str, type[EventPayload]], ...] = (
    (f"{COMMITMENT_TOPIC}.Made", "commitment.made", CommitmentMade),
    (f"{COMMITMENT_TOPIC}.Fulfilled", "commitment.fulfilled", CommitmentFulfilled),
    (f"{COMMITMENT_TOPIC}.Breached", "commitment.breached", CommitmentBreached),
    (f"{REPAIR_TOPIC}.Applied", "repair.applied", RepairApplied),
    (f"{REPAIR_TOPIC}.Accepted", "repair.accepted", RepairDecided),
    (f"{REPAIR_TOPIC}.Rejected", "repair.rejected", RepairDecided),
    (f"{REPAIR_TOPIC}.Approved", "repair.approved", RepairDecided),
    (f"{REPAIR_TOPIC}.Denied", "repair.denied", RepairDecided),
    (f"{REPORT_TOPIC}.Filed", "report.filed", ReportFiled),
    (f"{REPORT_TOPIC}.Answered", "report.answered", ReportAnswered),
)

for _topic, _name, _payload in _EVENTS:
    register(_topic, _name, _payload)
