"""The decision of a check, from the listings in force and the measure catalogue.

A measure applies to a listing for a matter when it is active, names the listing's list, and
(when it names any) its severity, intent and domain, and names the matter or the matter's
category. A punitive listing in force suspends every incentive (a punitive hit suspends
incentives). The decision follows the strongest effect that applies:

    prohibit → deny,  restrict → review,  alert → alert,  facilitate → facilitate,
    nothing → clear.

Each listing in force is a hit, with the measures that apply to it (possibly none), so the
answer also explains a `clear`. Measures per (list, severity, intent, domain, matter) are
memoised for one catalogue version.
"""

from __future__ import annotations

from uuid import UUID

from projections.checkindex import (
    INTENTS,
    LISTS,
    NOTICED,
    OBJECTED,
    RECORD,
    REDLIST,
    SEVERITIES,
    CheckIndex,
)
from projections.checkindex_follower import CatalogueState
from schemas.catalogue import EFFECTS
from schemas.checks import Hit, MeasureRef

DECISION_BY_RANK: tuple[str, ...] = ("deny", "review", "alert", "facilitate", "clear")
_RANK = {effect: i for i, effect in enumerate(EFFECTS)}
_NONE = len(EFFECTS)
_FACILITATE = _RANK["facilitate"]

Applicable = tuple[tuple[MeasureRef, ...], int]


class Decider:
    def __init__(self, catalogue: CatalogueState, index: CheckIndex) -> None:
        self.catalogue = catalogue
        self.index = index
        self._version = -1
        self._memo: dict[tuple[int, int, str], Applicable] = {}

    def applicable(self, bits: int, domain: int, matter: str, category: str) -> Applicable:
        """The measures for a listing's (list, severity, intent) bits and domain, and the rank
        of the strongest (len(EFFECTS) when none)."""
        if self._version != self.catalogue.version:
            self._memo.clear()
            self._version = self.catalogue.version
        key = (bits & 0x3F, domain, matter)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._compute(bits, domain, matter, category)
        return found

    def _compute(self, bits: int, domain: int, matter: str, category: str) -> Applicable:
        list_name = LISTS[bits & 3]
        severity = SEVERITIES[bits >> 2 & 3]
        intent = INTENTS[bits >> 4 & 3]
        domain_name = self.index.domains.name(domain)
        found = sorted(
            (_RANK[measure.effect], measure.code, measure.name)
            for measure in self.catalogue.measures.values()
            if measure.active
            and list_name in measure.lists
            and (matter in measure.matters or category in measure.matters)
            and (not measure.severities or severity in measure.severities)
            and (not measure.intents or intent in measure.intents)
            and (not measure.domains or domain_name in measure.domains)
            and measure.effect in _RANK
        )
        refs = tuple(MeasureRef(code, name, EFFECTS[rank]) for rank, code, name in found)
        return refs, found[0][0] if found else _NONE

    def decide(
        self, packed: bytes | None, matter: str, category: str, now: int
    ) -> tuple[str, list[Hit]]:
        """The decision and hits for a subject's records (`None`: not in the index)."""
        if packed is None:
            return "clear", []
        entries = [e for e in RECORD.iter_unpack(packed) if _in_force(e, now)]
        if not entries:
            return "clear", []
        punitive = any(e[6] & 3 != REDLIST for e in entries)
        best = _NONE
        hits = []
        regions = self.index.regions
        for listing_id, _s, _e, _n, domain, region, bits, _p in entries:
            refs, rank = self.applicable(bits, domain, matter, category)
            if punitive and rank >= _FACILITATE:
                refs, rank = (), _NONE  # incentives are suspended while a punishment is in force
            best = min(best, rank)
            hits.append(
                Hit(
                    listing_id=str(UUID(bytes=listing_id)),
                    list=LISTS[bits & 3],
                    severity=SEVERITIES[bits >> 2 & 3],
                    region=regions.name(region),
                    measures=list(refs),
                )
            )
        return DECISION_BY_RANK[best], hits


def _in_force(entry: tuple[bytes, int, int, int, int, int, int, int], now: int) -> bool:
    _id, start, end, notice, _d, _r, bits, pending = entry
    status = bits >> 6
    if status == OBJECTED or (status == NOTICED and (notice > now or pending)):
        return False
    return start <= now < end
