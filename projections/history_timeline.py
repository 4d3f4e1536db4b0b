"""A listing's history in effective time, derived from its events: pure, no I/O.

`Timeline` folds a listing's events (in log order) and answers, for an effective instant t:
the terms that applied at t, whether the listing was in force at t, and whether it was
pending (in its notice window). `segments()` lists the intervals of effective time in which
it was in force, with the terms of each: what the bitemporal projection stores per version.

Rules (docs/AUDIT.md has the full statement):
- Terms at t: the registered terms with every amendment whose `applies_from` <= t applied,
  in the order the amendments were recorded. A retroactive correction is an amendment whose
  `applies_from` lies before its recording.
- Release: a listing without a notice window is never held back. With one, it is held until
  `notice_until`; an objection still pending then holds it until the recorded time of the
  answer that leaves none pending (while pending, indefinitely).
- In force at t: released at t, `effective_from` <= t < `effective_until` (terms at t), and
  t < the `effective_at` of a delisting (which may lie in the past: revoked, corrected,
  objection upheld).
- Recorded time of an event: its timestamp, raised to the previous event's of the same
  listing if the clock went back, so that a listing's history is monotonic in both axes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas import events as ev

TERMS = (
    "subject_name",
    "list",
    "domain",
    "severity",
    "intent",
    "region",
    "authority",
    "decision_no",
    "effective_from",
    "effective_until",
)

Terms = tuple[Any, ...]
"""Values of `TERMS`, in that order."""


@dataclass(frozen=True, slots=True)
class Segment:
    """In force during [valid_from, valid_to) of effective time (valid_to None: open)."""

    valid_from: datetime
    valid_to: datetime | None
    terms: Terms

    def term(self, name: str) -> Any:
        return self.terms[TERMS.index(name)]


@dataclass
class _Objection:
    received_at: datetime
    resolved_at: datetime | None = None


@dataclass
class Timeline:
    listing_id: str
    subject_id: str
    base: dict[str, Any]
    registered_at: datetime
    notice_until: datetime | None
    release: datetime | None
    amendments: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)
    objections: list[_Objection] = field(default_factory=list)
    delisted_at: datetime | None = None
    delist_reason: str | None = None
    position: int = 0
    recorded_at: datetime | None = None

    @classmethod
    def start(cls, listing_id: str, position: int, p: ev.ListingRegistered) -> Timeline:
        base = {name: getattr(p, name) for name in TERMS}
        timeline = cls(listing_id, p.subject_id, base, p.timestamp, p.notice_until, p.notice_until)
        timeline.position, timeline.recorded_at = position, p.timestamp
        return timeline

    def apply(self, position: int, payload: ev.EventPayload) -> None:
        """Fold one later event of this listing (in log order)."""
        recorded = max(payload.timestamp, self.recorded_at or payload.timestamp)
        self.position, self.recorded_at = position, recorded
        match payload:
            case ev.ListingObjected():
                self.objections.append(_Objection(payload.received_at))
            case ev.ListingObjectionResolved():
                if payload.n - 1 < len(self.objections):
                    self.objections[payload.n - 1].resolved_at = recorded
                if not self.pending_objections() and self.notice_until is not None:
                    self.release = max(self.notice_until, recorded)
            case ev.ListingAmended():
                self.amendments.append((payload.applies_from, dict(payload.changes)))
            case ev.ListingDelisted():
                self.delisted_at, self.delist_reason = payload.effective_at, payload.reason
            case _:
                return

    def pending_objections(self) -> list[_Objection]:
        return [o for o in self.objections if o.resolved_at is None]

    def _held(self, t: datetime | None = None) -> bool:
        """Whether the notice holds the listing back at t (t None: for good, as known)."""
        if self.notice_until is None:
            return False
        if self.pending_objections() or self.release is None:
            return True
        return t is not None and t < self.release

    def terms_at(self, t: datetime) -> dict[str, Any]:
        terms = dict(self.base)
        for applies_from, changes in self.amendments:
            if applies_from <= t:
                terms.update({k: v for k, v in changes.items() if k in terms})
        return terms

    def in_force_at(self, t: datetime) -> bool:
        if self._held(t):
            return False
        if self.delisted_at is not None and t >= self.delisted_at:
            return False
        terms = self.terms_at(t)
        until = terms["effective_until"]
        return bool(terms["effective_from"] <= t and (until is None or t < until))

    def status_at(self, t: datetime) -> str | None:
        """effective, noticed, objected, delisted, or None (not on the list at t)."""
        if self.delisted_at is not None and t >= self.delisted_at:
            return "delisted" if t >= self.registered_at else None
        if self.in_force_at(t):
            return "effective"
        if self.notice_until is not None and self.registered_at <= t and self._held(t):
            objected = any(
                o.received_at <= t and (o.resolved_at is None or t < o.resolved_at)
                for o in self.objections
            )
            return "objected" if objected else "noticed"
        return None

    def segments(self) -> list[Segment]:
        if self._held():
            return []
        released = self.release if self.notice_until is not None else None
        cuts = sorted({applies_from for applies_from, _ in self.amendments})
        pieces = list(zip([None, *cuts], [*cuts, None], strict=True))
        out: list[Segment] = []
        for start, end in pieces:
            terms = self.terms_at(start) if start is not None else dict(self.base)
            lower = max(x for x in (start, terms["effective_from"], released) if x is not None)
            uppers = [x for x in (end, terms["effective_until"], self.delisted_at) if x]
            upper = min(uppers) if uppers else None
            if upper is not None and upper <= lower:
                continue
            values = tuple(terms[name] for name in TERMS)
            if out and out[-1].valid_to == lower and out[-1].terms == values:
                out[-1] = Segment(out[-1].valid_from, upper, values)
            else:
                out.append(Segment(lower, upper, values))
        return out


def fold(listing_id: str, events: Sequence[tuple[int, ev.EventPayload]]) -> Timeline | None:
    """The timeline of a listing from its events (position, payload), in log order."""
    timeline: Timeline | None = None
    for position, payload in events:
        if isinstance(payload, ev.ListingRegistered):
            timeline = Timeline.start(listing_id, position, payload)
        elif timeline is not None:
            timeline.apply(position, payload)
    return timeline
