"""API bodies of the subject's side: commitments, repair cases, public reports, public view.

Inbound bodies forbid unknown fields. Public answers (`Public*`) carry only what may be
published: identity numbers masked, restricted records left out.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from msgspec import Meta, Struct

from schemas.listing import DomainCode, Severity, ShortText, Text

CommitmentType = Literal[
    "approval_substitute",
    "missing_materials",
    "certification",
    "repair",
    "self_regulation",
    "voluntary",
]
CommitterCategory = Literal["organisation", "person", "individual_business"]
Publicity = Literal["public", "restricted", "not_public"]
FulfilmentStatus = Literal["pending", "fulfilled", "partly", "not_fulfilled"]
CommitmentCode = Annotated[str, Meta(pattern=r"^[0-9]{20}$", examples=["32010020250303000001"])]
MaterialKind = Literal[
    "commitment", "penalty_performed", "credit_report", "training_certificate", "other"
]
RepairStatus = Literal["applied", "accepted", "rejected", "approved", "denied"]
ReportKind = Literal["wrong_listing", "measure_not_applied", "measure_misapplied", "other"]
Ref = Annotated[str, Meta(min_length=1, max_length=500)]


class Committer(Struct, forbid_unknown_fields=True):
    name: ShortText
    category: CommitterCategory
    code: Annotated[str, Meta(min_length=1, max_length=64, examples=["uscc:91350100M000100Y43"])]


class NewCommitment(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/commitments`: a commitment the calling (accepting) agency received.

    `code` is 6-digit region + 8-digit date (the date made) + 6-digit serial. `domain` is the
    key domain of the matter, used if a breach lists the committer; `valid_until` None: no end.
    """

    code: CommitmentCode
    committer: Committer
    type: CommitmentType
    reason: Text
    content: Text
    liability: Text
    made_on: date | None = None
    valid_until: date | None = None
    accepting_agency: ShortText | None = None
    publicity: Publicity = "public"
    domain: DomainCode | None = None


class Fulfilment(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/commitments/{code}/fulfil`."""

    status: Literal["fulfilled", "partly"] = "fulfilled"
    note: Text


class Breach(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/commitments/{code}/breach`: the committer did not keep its word."""

    facts: Text
    severity: Severity = "general"
    domain: DomainCode | None = None
    note: Annotated[str, Meta(max_length=4000)] = ""


class CommitmentView(Struct, kw_only=True):
    commitment_id: str
    code: str
    committer: Committer
    type: CommitmentType
    reason: str
    content: str
    liability: str
    made_on: date
    valid_until: date | None
    accepting_agency: str
    publicity: Publicity
    domain: str | None
    status: FulfilmentStatus
    recorded_at: datetime
    breach_listing_id: str | None = None
    position: int = 0


class CommitmentList(Struct):
    subject_id: str
    commitments: list[CommitmentView]


class Material(Struct, forbid_unknown_fields=True):
    kind: MaterialKind
    ref: Ref


class NewRepair(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/repairs`: a subject's application, filed through an agency's system."""

    listing_id: Annotated[str, Meta(min_length=1, max_length=64)]
    materials: Annotated[list[Material], Meta(min_length=1, max_length=50)]
    commitment_code: CommitmentCode | None = None
    training_certificate: Ref | None = None


class RepairDecision(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/repairs/{id}/accept|reject|approve|deny`."""

    reason: Text


class RepairCreated(Struct):
    repair_id: str
    status: RepairStatus
    position: int


class RepairStep(Struct):
    status: RepairStatus
    by: str
    reason: str
    at: datetime


class RepairView(Struct, kw_only=True):
    repair_id: str
    status: RepairStatus
    listing_id: str
    subject_id: str
    authority: str
    filed_by: str
    materials: list[Material]
    commitment_code: str | None
    training_certificate: str | None
    received_at: datetime
    decision_due: datetime
    answer_due: datetime
    decision_overdue: bool
    answer_overdue: bool
    decisions: list[RepairStep]
    position: int = 0


class NewReport(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /public/reports`: anyone reports a wrong listing or a measure (not) applied.

    Name the listing (its authority answers) or the agency responsible.
    """

    kind: ReportKind
    content: Text
    listing_id: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    agency: Annotated[str, Meta(min_length=2, max_length=64)] | None = None
    subject_name: ShortText | None = None
    contact: Annotated[str, Meta(max_length=200)] | None = None


class ReportAnswer(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/reports/{id}/answer`."""

    answer: Text
    upheld: bool = False


class ReportReceipt(Struct):
    report_id: str
    agency: str
    answer_due: datetime


class ReportView(Struct, kw_only=True):
    report_id: str
    kind: ReportKind
    content: str
    agency: str
    listing_id: str | None
    subject_name: str | None
    contact: str | None
    received_at: datetime
    answer_due: datetime
    status: Literal["filed", "answered"]
    overdue: bool
    answer: str | None = None
    upheld: bool | None = None
    answered_at: datetime | None = None


class ReportPage(Struct):
    reports: list[ReportView]
    next_after: str | None


class OverdueItem(Struct):
    kind: Literal["objection", "repair_decision", "repair_answer", "report"]
    id: str
    due: datetime


class OverdueSummary(Struct):
    agency: str
    as_of: datetime
    counts: dict[str, int]
    items: list[OverdueItem]


class PublicListing(Struct, kw_only=True):
    list: str
    domain: str
    severity: str | None
    authority: str
    decision_no: str
    region: str
    effective_from: datetime
    effective_until: datetime | None
    publish_until: datetime | None


class PublicCommitment(Struct, kw_only=True):
    code: str
    type: str
    reason: str
    content: str
    made_on: date
    valid_until: date | None
    accepting_agency: str
    status: str


class PublicSubject(Struct, kw_only=True):
    subject_id: str
    names: list[str]
    listings: list[PublicListing]
    commitments: list[PublicCommitment]
    as_of: datetime


class PublicSearchPage(Struct):
    subjects: list[PublicSubject]
    next_cursor: str | None
