"""Checks (自动比对): an approval system asks whether a subject may get a matter, and which
measures apply; it reports back what it applied (反馈). Bodies, answers and stored records.

Inbound bodies forbid unknown fields. A single check's id is a UUID; the items of a batch
are `<batch id>:<index>`.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from schemas.listing import Text

Decision = Literal["deny", "review", "alert", "facilitate", "clear"]
DECISIONS: tuple[str, ...] = ("deny", "review", "alert", "facilitate", "clear")
MAX_BATCH = 10_000

SubjectIdText = Annotated[
    str, Meta(min_length=1, max_length=64, examples=["uscc:91350100M000100Y43"])
]
MatterText = Annotated[
    str, Meta(min_length=1, max_length=128, examples=["administrative_licensing.food_business"])
]
Purpose = Annotated[str, Meta(min_length=1, max_length=200, examples=["食品经营许可 申请受理"])]
MinPosition = Annotated[int, Meta(ge=0)]


class CheckItem(Struct, forbid_unknown_fields=True, kw_only=True):
    """One question: may `subject_id` get `matter`, asked for `purpose`."""

    subject_id: SubjectIdText
    matter: MatterText
    purpose: Purpose


class CheckRequest(CheckItem, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/checks`. `min_position`: answer only once the index has applied this log
    position (read your own writes), else 503 with Retry-After."""

    min_position: MinPosition | None = None


class BatchRequest(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/checks/batch`: up to 10,000 questions answered from one index state."""

    items: Annotated[list[CheckItem], Meta(min_length=1, max_length=MAX_BATCH)]
    min_position: MinPosition | None = None


class MeasureRef(Struct):
    code: str
    name: str
    effect: str


class Hit(Struct, kw_only=True):
    """A listing in force on the subject, with the catalogue's measures for the matter."""

    listing_id: str
    list: str
    severity: str | None
    region: str
    measures: builtins.list[MeasureRef]


class CheckAnswer(Struct, kw_only=True):
    check_id: str
    decision: Decision
    hits: list[Hit]
    position: int
    catalogue_version: int
    checked_at: datetime
    tree_size: int = 0
    """Size of the verifiable log (events at positions <= `position`) the answer rests on."""


class CheckResult(Struct, kw_only=True):
    check_id: str
    decision: Decision
    hits: list[Hit]


class BatchAnswer(Struct, kw_only=True):
    batch_id: str
    results: list[CheckResult]
    position: int
    catalogue_version: int
    checked_at: datetime
    tree_size: int = 0


class NewFeedback(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/checks/{check_id}/feedback`: whether the agency applied a returned measure."""

    measure_code: Annotated[str, Meta(min_length=1, max_length=64)]
    applied: bool
    note: Text | None = None


class Feedback(Struct, kw_only=True):
    check_id: str
    measure_code: str
    applied: bool
    note: str | None
    agency: str
    recorded_at: datetime


class CheckRecord(Struct, kw_only=True):
    """`GET /v1/checks/{check_id}`: who asked about whom, for what, and what the hub answered."""

    check_id: str
    agency: str
    subject_id: str
    matter: str
    purpose: str
    decision: Decision
    hits: list[Hit]
    position: int
    catalogue_version: int
    checked_at: datetime
    batch_id: str | None = None
    feedback: list[Feedback] = msgspec.field(default_factory=list)


class Stats(Struct, kw_only=True):
    """`GET /v1/stats`: counts by dimension; each map is key → count."""

    as_of: datetime
    totals: dict[str, int]
    listings: dict[str, dict[str, int]]
    checks: dict[str, dict[str, int]]
    hits: dict[str, dict[str, int]]
    measures: dict[str, dict[str, int]]
    applied: dict[str, dict[str, int]]
