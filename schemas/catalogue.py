"""The measure catalogue (措施清单): measures, the matters they apply to, and their bodies.

A measure ties lists (and optionally severities, intents and domains) to matters, with an
effect in an approval: `prohibit` (one-vote veto, 一票否决), `restrict` (manual review),
`alert` (prompt only) or `facilitate` (an incentive). A matter is one of the five categories
or a specific matter code `<category>.<name>` that belongs to one of them.

`MeasureBody` is the inbound `PUT /v1/measures/{code}` body and forbids unknown fields;
`Measure` is the stored record (in events and answers) and never does.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

# The vocabularies of `schemas.listing`, repeated: this module is imported while
# `schemas.events` registers event families, before `schemas.listing` can be.
ListName = Literal["blacklist", "watchlist", "market_ban", "redlist"]
Severity = Literal["minor", "general", "severe"]
Intent = Literal["intentional", "unintentional"]
DomainCode = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
ShortText = Annotated[str, Meta(min_length=1, max_length=200)]
Text = Annotated[str, Meta(min_length=1, max_length=4000)]
Kind = Literal["punitive", "incentive"]
Effect = Literal["prohibit", "restrict", "alert", "facilitate"]
MatterCategory = Literal[
    "government_procurement",
    "bidding",
    "administrative_licensing",
    "state_funding",
    "public_honours",
]
MATTER_CATEGORIES: tuple[str, ...] = (
    "government_procurement",
    "bidding",
    "administrative_licensing",
    "state_funding",
    "public_honours",
)
EFFECTS: tuple[str, ...] = ("prohibit", "restrict", "alert", "facilitate")
"""Effects from the strongest to the weakest."""

MEASURE_CODE = r"^[a-z][a-z0-9_]{1,47}(\.[a-z0-9_]{1,47}){0,3}$"
MATTER_CODE = r"^[a-z][a-z_]{1,47}(\.[a-z0-9_]{1,63})?$"
MeasureCode = Annotated[str, Meta(pattern=MEASURE_CODE, examples=["procurement.exclude"])]
MatterCode = Annotated[
    str, Meta(pattern=MATTER_CODE, examples=["administrative_licensing.food_business"])
]


class MeasureBody(Struct, forbid_unknown_fields=True, kw_only=True):
    """`PUT /v1/measures/{code}`: create or replace one measure of the catalogue."""

    name: ShortText
    kind: Kind
    effect: Effect
    lists: Annotated[list[ListName], Meta(min_length=1)]
    matters: Annotated[list[MatterCode], Meta(min_length=1, max_length=200)]
    legal_basis: Text
    severities: list[Severity] = msgspec.field(default_factory=list)
    intents: list[Intent] = msgspec.field(default_factory=list)
    domains: list[DomainCode] = msgspec.field(default_factory=list)
    agencies: Annotated[list[ShortText], Meta(max_length=100)] = msgspec.field(default_factory=list)
    active: bool = True


class Measure(Struct, kw_only=True):
    """A measure as the catalogue holds it. Empty `severities`, `intents` or `domains` mean any."""

    code: str
    name: str
    kind: str
    effect: str
    lists: list[str]
    matters: list[str]
    legal_basis: str
    severities: list[str] = msgspec.field(default_factory=list)
    intents: list[str] = msgspec.field(default_factory=list)
    domains: list[str] = msgspec.field(default_factory=list)
    agencies: list[str] = msgspec.field(default_factory=list)
    active: bool = True


class Matter(Struct, kw_only=True):
    """A specific approval matter (事项) and the category whose measures also apply to it."""

    code: str
    name: str
    category: str


class DefaultCatalogue(Struct, forbid_unknown_fields=True, kw_only=True):
    """The shape of the shipped data file `hub/data/measures.json`."""

    matters: list[Matter]
    measures: list[Measure]


class CatalogueView(Struct, kw_only=True):
    """`GET /v1/measures`: the catalogue at a version, and the matters checks may name."""

    version: int
    position: int
    measures: list[Measure]
    categories: list[str]
    matters: list[Matter]


class MeasurePutResult(Struct, kw_only=True):
    code: str
    changed: bool
    catalogue_version: int
    position: int
