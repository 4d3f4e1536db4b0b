"""The agency client's replica state: the active listings, kept from the stream's events.

Pure data and rules, no I/O (`adapters.client_replica` feeds it and saves it). It mirrors
the listing lifecycle of the hub (`hub.credit.domainmodel`) just far enough to answer "which
listings are in force on this subject now": a listing is in force when it is effective (or
its notice window has ended with no objection pending), has started, and has not expired.
A delisting removes it. The state remembers the last stream sequence and log position it
applied, so applying a message twice changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from msgspec import Struct

from adapters.cloudevents import TYPE_PREFIX, CloudEvent

LISTING_TYPE = TYPE_PREFIX + "listing."
_AMENDABLE = ("severity", "effective_from", "effective_until", "subject_name")


class ReplicaListing(Struct, kw_only=True):
    listing_id: str
    subject_id: str
    subject_name: str
    list: str
    domain: str
    region: str
    severity: str | None
    authority: str
    decision_no: str
    status: str
    effective_from: datetime
    effective_until: datetime | None
    notice_until: datetime | None
    pending_objections: int = 0

    def in_force_at(self, now: datetime) -> bool:
        status = self.status
        if status == "noticed" and self.notice_until is not None and self.notice_until <= now:
            status = "effective" if self.pending_objections == 0 else status
        if status != "effective" or self.effective_from > now:
            return False
        return self.effective_until is None or now < self.effective_until


class ReplicaState(Struct, kw_only=True):
    """What the replica saves: its listings, how far into the stream it has applied, and the
    last time it knew it had everything the stream held (`current_at`)."""

    stream_seq: int = 0
    position: int = 0
    applied_at: datetime | None = None
    current_at: datetime | None = None
    listings: dict[str, ReplicaListing] = msgspec.field(default_factory=dict)


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _amend(listing: ReplicaListing, changes: dict[str, Any]) -> None:
    for key in _AMENDABLE:
        if key in changes:
            value = changes[key]
            setattr(listing, key, _time(value) if key.startswith("effective") else value)


class Replica:
    """The state plus an index subject -> listing ids; `apply()` takes one stream message."""

    def __init__(self, state: ReplicaState | None = None) -> None:
        self.state = state or ReplicaState()
        self._by_subject: dict[str, set[str]] = {}
        for listing in self.state.listings.values():
            self._by_subject.setdefault(listing.subject_id, set()).add(listing.listing_id)

    def apply(self, seq: int, event: CloudEvent, now: datetime) -> bool:
        """Apply the message at stream sequence `seq`; False if it was applied before."""
        if seq <= self.state.stream_seq:
            return False
        if event.type.startswith(LISTING_TYPE):
            self._listing_event(event.type.removeprefix(LISTING_TYPE), event.data)
        self.state.stream_seq = seq
        self.state.position = int(event.data.get("position", self.state.position))
        self.state.applied_at = now
        return True

    def in_force(self, subject_id: str, now: datetime) -> list[ReplicaListing]:
        listings = self.state.listings
        found = [listings[i] for i in self._by_subject.get(subject_id, ())]
        return sorted((x for x in found if x.in_force_at(now)), key=lambda x: x.listing_id)

    def __len__(self) -> int:
        return len(self.state.listings)

    def _listing_event(self, name: str, data: dict[str, Any]) -> None:
        listing_id = str(data.get("aggregate_id"))
        if name == "registered":
            self._add(listing_id, data)
            return
        listing = self.state.listings.get(listing_id)
        if listing is None:
            return
        if name == "delisted":
            del self.state.listings[listing_id]
            self._by_subject.get(listing.subject_id, set()).discard(listing_id)
        elif name == "objected":
            listing.pending_objections += 1
            listing.status = "objected"
        elif name == "objection_resolved":
            listing.pending_objections = max(0, listing.pending_objections - 1)
            if listing.pending_objections == 0 and listing.status == "objected":
                listing.status = "noticed"
        elif name == "took_effect":
            listing.status = "effective"
        elif name == "amended":
            _amend(listing, data.get("changes") or {})

    def _add(self, listing_id: str, data: dict[str, Any]) -> None:
        notice_until = _time(data.get("notice_until"))
        effective_from = _time(data["effective_from"])
        if effective_from is None:
            return
        listing = ReplicaListing(
            listing_id=listing_id,
            subject_id=str(data["subject_id"]),
            subject_name=str(data.get("subject_name", "")),
            list=str(data["list"]),
            domain=str(data.get("domain", "")),
            region=str(data.get("region", "")),
            severity=data.get("severity"),
            authority=str(data.get("authority", "")),
            decision_no=str(data.get("decision_no", "")),
            status="noticed" if notice_until is not None else "effective",
            effective_from=effective_from,
            effective_until=_time(data.get("effective_until")),
            notice_until=notice_until,
        )
        self.state.listings[listing_id] = listing
        self._by_subject.setdefault(listing.subject_id, set()).add(listing_id)
