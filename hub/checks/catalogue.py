"""The catalogue service: seeds the default catalogue, validates and applies `PUT
/v1/measures/{code}`, and reads the catalogue with its version.

The default catalogue ships as `hub/data/measures.json` (drawn from the national basic list of
punishment measures and the incentive examples of DOMAIN.md). It is seeded as events on the
first start only: once the catalogue aggregate exists, operators change it through the API.
The matters that checks may name (five categories plus specific matter codes) come from the
same file.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
from collections.abc import Iterable

import msgspec

from hub.credit.application import CreditApplication, UnitOfWork
from hub.credit.catalogue import CATALOGUE_ID, Catalogue
from hub.credit.committer import Committer
from hub.errors import InputError, RuleViolation
from schemas.catalogue import (
    MATTER_CATEGORIES,
    MEASURE_CODE,
    CatalogueView,
    DefaultCatalogue,
    Matter,
    Measure,
    MeasureBody,
    MeasurePutResult,
)
from schemas.listing import INCENTIVE_LISTS, PUNITIVE_LISTS

_CODE = re.compile(MEASURE_CODE)


def load_default_catalogue() -> DefaultCatalogue:
    data = importlib.resources.files("hub.data").joinpath("measures.json").read_bytes()
    return msgspec.json.decode(data, type=DefaultCatalogue)


class Matters:
    """The matters a check may name: a category, or a specific code mapped to its category."""

    def __init__(self, specific: Iterable[Matter]) -> None:
        self.categories: tuple[str, ...] = MATTER_CATEGORIES
        self.specific: dict[str, Matter] = {m.code: m for m in specific}
        self.by_matter: dict[str, str] = {c: c for c in MATTER_CATEGORIES}
        """A matter's category by the matter (a category is its own)."""
        for matter in self.specific.values():
            if matter.category not in MATTER_CATEGORIES:
                raise ValueError(f"matter {matter.code} names unknown category {matter.category}")
            self.by_matter[matter.code] = matter.category

    def category_of(self, matter: str) -> str | None:
        return self.by_matter.get(matter)

    def require(self, matter: str, *, field: str = "matter") -> str:
        """The category of a matter; InputError naming `field` when the matter is unknown."""
        category = self.by_matter.get(matter)
        if category is None:
            raise InputError(
                f"unknown matter {matter!r}: name a category ({', '.join(self.categories)}) "
                "or a specific matter code listed by GET /v1/measures",
                field=field,
            )
        return category


def validate_measure(
    code: str, body: MeasureBody, matters: Matters, domains: frozenset[str]
) -> Measure:
    """Rules a measure body must keep beyond its types; returns the normalised record."""
    if not _CODE.match(code):
        raise InputError(
            f"measure code {code!r} must be lower-case words joined by '.'", field="code"
        )
    incentive = body.kind == "incentive"
    if incentive != (body.effect == "facilitate"):
        raise RuleViolation(
            f"a {body.kind} measure cannot have the effect {body.effect!r}: only incentive "
            "measures facilitate",
            field="effect",
            rule="measure.effect_kind",
        )
    allowed = INCENTIVE_LISTS if incentive else PUNITIVE_LISTS
    for i, name in enumerate(body.lists):
        if name not in allowed:
            raise RuleViolation(
                f"a {body.kind} measure applies to {sorted(allowed)}, not {name!r}",
                field=f"lists.{i}",
                rule="measure.list_kind",
            )
    if incentive and (body.severities or body.intents):
        raise InputError(
            "severities and intents apply to punitive measures only", field="severities"
        )
    for i, domain in enumerate(body.domains):
        if domain not in domains:
            raise InputError(f"domain {domain!r} is not in the catalogue", field=f"domains.{i}")
    for i, matter in enumerate(body.matters):
        matters.require(matter, field=f"matters.{i}")
    return Measure(
        code=code,
        name=body.name,
        kind=body.kind,
        effect=body.effect,
        lists=sorted(set(body.lists)),
        matters=sorted(set(body.matters)),
        legal_basis=body.legal_basis,
        severities=sorted(set(body.severities)),
        intents=sorted(set(body.intents)),
        domains=sorted(set(body.domains)),
        agencies=list(dict.fromkeys(body.agencies)),
        active=body.active,
    )


class CatalogueService:
    def __init__(
        self,
        app: CreditApplication,
        committer: Committer,
        domains: frozenset[str],
        defaults: DefaultCatalogue | None = None,
    ) -> None:
        self.app = app
        self.committer = committer
        self.domains = domains
        self.defaults = defaults or load_default_catalogue()
        self.matters = Matters(self.defaults.matters)

    async def seed(self) -> bool:
        """Create the catalogue with the default measures unless it exists; True if created."""
        measures = [msgspec.to_builtins(m) for m in self.defaults.measures]

        def command(uow: UnitOfWork) -> bool:
            if uow.get(CATALOGUE_ID) is not None:
                return False
            catalogue = Catalogue.create(now=uow.now)
            for measure in measures:
                catalogue.put(measure, now=uow.now)
            uow.add(catalogue)
            return True

        created, _ = await self.committer.submit(command)
        return bool(created)

    async def put(self, code: str, body: MeasureBody) -> MeasurePutResult:
        record = msgspec.to_builtins(validate_measure(code, body, self.matters, self.domains))

        def command(uow: UnitOfWork) -> tuple[bool, int, int]:
            catalogue = uow.get(CATALOGUE_ID)
            if not isinstance(catalogue, Catalogue):
                catalogue = Catalogue.create(now=uow.now)
                uow.add(catalogue)
            changed = catalogue.put(record, now=uow.now)
            uow.add(catalogue)
            return changed, catalogue.version, uow.position(CATALOGUE_ID)

        (changed, version, old), position = await self.committer.submit(command)
        return MeasurePutResult(
            code=code, changed=changed, catalogue_version=version, position=position or old
        )

    async def view(self) -> CatalogueView:
        catalogue, position = await asyncio.to_thread(self.app.load, CATALOGUE_ID)
        measures = catalogue.measures if isinstance(catalogue, Catalogue) else {}
        return CatalogueView(
            version=catalogue.version if catalogue is not None else 0,
            position=position,
            measures=[msgspec.convert(measures[c], Measure) for c in sorted(measures)],
            categories=list(self.matters.categories),
            matters=sorted(self.matters.specific.values(), key=lambda m: m.code),
        )
