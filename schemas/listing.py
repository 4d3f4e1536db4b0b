"""Listings: the lists, their vocabularies, and the bodies of listing commands and answers.

Inbound bodies forbid unknown fields so that a misspelt field is an error, not silently
ignored. Times are RFC 3339 with an offset.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from schemas.log import LogEvent

ListName = Literal["blacklist", "watchlist", "market_ban", "redlist"]
PUNITIVE_LISTS: frozenset[str] = frozenset({"blacklist", "watchlist", "market_ban"})
INCENTIVE_LISTS: frozenset[str] = frozenset({"redlist"})
Severity = Literal["minor", "general", "severe"]
Intent = Literal["intentional", "unintentional"]
Status = Literal["noticed", "objected", "effective", "delisted"]
DelistReason = Literal["expired", "repaired", "corrected", "objection_upheld", "revoked"]

Text = Annotated[str, Meta(min_length=1, max_length=4000)]
ShortText = Annotated[str, Meta(min_length=1, max_length=200)]
DomainCode = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
RegionCode = Annotated[str, Meta(pattern=r"^[1-9][0-9]{5}$")]
AwareDatetime = Annotated[datetime, Meta(tz=True)]


class SubjectRef(Struct, forbid_unknown_fields=True):
    id: Annotated[str, Meta(min_length=1, max_length=64, examples=["uscc:91350100M000100Y43"])]
    name: ShortText


class Basis(Struct, forbid_unknown_fields=True):
    decision_no: Annotated[str, Meta(min_length=1, max_length=128)]
    legal_basis: Text
    facts: Text


class NewListing(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/listings`: an authority puts a subject on a list on a decision document."""

    subject: SubjectRef
    list: ListName
    domain: DomainCode
    basis: Basis
    region: RegionCode
    effective_from: AwareDatetime
    effective_until: AwareDatetime | None = None
    severity: Severity | None = None
    intent: Intent | None = None
    notice_days: Annotated[int, Meta(ge=0, le=60)] | None = None


class Amendment(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/listings/{id}/amend`: change a listing's terms; unset fields stay as they are.

    `applies_from` dates a correction back in effective time (a retroactive correction);
    it defaults to the moment of recording.
    """

    note: Text
    severity: Severity | None = None
    intent: Intent | None = None
    effective_from: AwareDatetime | None = None
    effective_until: AwareDatetime | None = None
    legal_basis: Text | None = None
    facts: Text | None = None
    subject_name: ShortText | None = None
    applies_from: AwareDatetime | None = None


class Delisting(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/listings/{id}/delist`."""

    reason: DelistReason
    note: Text
    effective_at: AwareDatetime | None = None


class NewObjection(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/listings/{id}/objections`: a subject's objection, as its authority got it."""

    grounds: Text
    received_at: AwareDatetime | None = None


class ObjectionAnswer(Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/listings/{id}/objections/{n}/resolve`."""

    upheld: bool
    answer: Text


class CommandResult(Struct):
    """What every listing command answers."""

    listing_id: str
    status: Status
    position: int


class Objection(Struct):
    n: int
    grounds: str
    received_at: datetime
    answer_due: datetime
    resolved: bool = False
    upheld: bool | None = None
    answer: str | None = None


class ListingView(Struct, kw_only=True):
    """A listing's current state as its aggregate holds it."""

    listing_id: str
    status: Status
    subject: SubjectRef
    list: ListName
    domain: str
    severity: Severity | None
    intent: Intent | None
    basis: Basis
    region: str
    authority: str
    effective_from: datetime
    effective_until: datetime | None
    notice_until: datetime | None
    recorded_at: datetime
    delist_reason: DelistReason | None = None
    delisted_at: datetime | None = None
    objections: builtins.list[Objection] = msgspec.field(default_factory=builtins.list)
    version: int = 0


class ListingSummary(Struct, kw_only=True):
    listing_id: str
    list: str
    domain: str
    severity: str | None
    intent: str | None
    region: str
    authority: str
    decision_no: str
    status: str
    effective_from: datetime
    effective_until: datetime | None
    position: int


class ListingDetail(Struct):
    listing: ListingView
    events: list[LogEvent]


class SubjectProfile(Struct):
    subject_id: str
    names: list[str]
    active: list[ListingSummary]
    pending: list[ListingSummary]
    as_of: datetime
