"""The check index: every listing not delisted, by subject, in memory and compact.

Checks answer from this index, not from PostgreSQL. It must hold millions of listings in a
few hundred megabytes, so a subject is a dict key of one small int (its code read in base 36,
one bit for the kind) and its listings are one `bytes` value of fixed-size records
(`RECORD`: listing id, times as whole seconds since the epoch, interned domain and region,
and one byte of list, severity, intent and status). About 150 bytes per listing in all.

A record is *in force* at `now` exactly as `projections.listings.IN_FORCE` says: effective (or
noticed with its window over and no objection pending), started, and not yet expired. Times
are held to the second: a start rounds up and an end rounds down, so a fraction of a second
never makes a listing count longer than its decision says.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from datetime import datetime
from typing import Any, NamedTuple

from schemas import events as ev

RECORD = struct.Struct("<16sIIIHHBB")
SIZE = RECORD.size
LISTS: tuple[str, ...] = ("blacklist", "watchlist", "market_ban", "redlist")
REDLIST = LISTS.index("redlist")
SEVERITIES: tuple[str | None, ...] = (None, "minor", "general", "severe")
INTENTS: tuple[str | None, ...] = (None, "intentional", "unintentional")
NOTICED, OBJECTED, EFFECTIVE = 0, 1, 2
STATUSES = {"noticed": NOTICED, "objected": OBJECTED, "effective": EFFECTIVE}
NO_END = 0xFFFFFFFF
_LIST_IDS = {name: i for i, name in enumerate(LISTS)}
_SEVERITY_IDS = {name: i for i, name in enumerate(SEVERITIES)}
_INTENT_IDS = {name: i for i, name in enumerate(INTENTS)}


def subject_key(subject_id: str) -> int:
    """The dict key of a canonical subject id (`uscc:<code>` or `cnid:<number>`)."""
    kind, _, code = subject_id.partition(":")
    return int(code, 36) << 1 | (kind == "cnid")


def start_seconds(moment: datetime) -> int:
    return min(max(math.ceil(moment.timestamp()), 0), NO_END - 1)


def end_seconds(moment: datetime | None) -> int:
    if moment is None:
        return NO_END
    return min(max(math.floor(moment.timestamp()), 0), NO_END - 1)


def flags(list_name: str, severity: str | None, intent: str | None, status: int) -> int:
    """List, severity, intent and status in one byte (2 bits each)."""
    return (
        _LIST_IDS[list_name]
        | _SEVERITY_IDS.get(severity, 0) << 2
        | _INTENT_IDS.get(intent, 0) << 4
        | status << 6
    )


class Entry(NamedTuple):
    """One unpacked record."""

    listing_id: bytes
    start: int
    end: int
    notice: int
    domain: int
    region: int
    flags: int
    pending: int

    @property
    def status(self) -> int:
        return self.flags >> 6

    def in_force(self, now: int) -> bool:
        status = self.flags >> 6
        if status == OBJECTED or (status == NOTICED and (self.notice > now or self.pending)):
            return False
        return self.start <= now < self.end


class Vocabulary:
    """Interns a small set of strings (domains, regions) as small ints for the records."""

    def __init__(self, limit: int = 0xFFFF) -> None:
        self.names: list[str] = []
        self.ids: dict[str, int] = {}
        self.limit = limit

    def id(self, name: str) -> int:
        found = self.ids.get(name)
        if found is None:
            if len(self.names) >= self.limit:
                raise OverflowError(f"more than {self.limit} distinct values")
            found = self.ids[name] = len(self.names)
            self.names.append(name)
        return found

    def name(self, value: int) -> str:
        return self.names[value]


def unpack(packed: bytes) -> Iterator[Entry]:
    for values in RECORD.iter_unpack(packed):
        yield Entry._make(values)


class CheckIndex:
    """Records by subject key. Not thread-safe: one event loop reads and writes it."""

    def __init__(self) -> None:
        self.subjects: dict[int, bytes] = {}
        self.listings = 0
        self.domains = Vocabulary()
        self.regions = Vocabulary()

    def get(self, key: int) -> bytes | None:
        return self.subjects.get(key)

    def pack(
        self,
        listing_id: bytes,
        *,
        start: int,
        end: int,
        notice: int,
        domain: str,
        region: str,
        flags: int,
        pending: int = 0,
    ) -> bytes:
        return RECORD.pack(
            listing_id,
            start,
            end,
            notice,
            self.domains.id(domain),
            self.regions.id(region),
            flags,
            min(pending, 255),
        )

    def add(self, key: int, record: bytes) -> None:
        """Add a record, or replace the subject's record with the same listing id."""
        packed = self.subjects.get(key)
        if packed is None:
            self.subjects[key] = record
            self.listings += 1
            return
        offset = self._find(packed, record[:16])
        if offset < 0:
            self.subjects[key] = packed + record
            self.listings += 1
        else:
            self.subjects[key] = packed[:offset] + record + packed[offset + SIZE :]

    def find(self, key: int, listing_id: bytes) -> Entry | None:
        packed = self.subjects.get(key)
        if packed is None:
            return None
        offset = self._find(packed, listing_id)
        return None if offset < 0 else Entry._make(RECORD.unpack_from(packed, offset))

    def remove(self, key: int, listing_id: bytes) -> bool:
        packed = self.subjects.get(key)
        if packed is None:
            return False
        offset = self._find(packed, listing_id)
        if offset < 0:
            return False
        rest = packed[:offset] + packed[offset + SIZE :]
        if rest:
            self.subjects[key] = rest
        else:
            del self.subjects[key]
        self.listings -= 1
        return True

    @staticmethod
    def _find(packed: bytes, listing_id: bytes) -> int:
        for offset in range(0, len(packed), SIZE):
            if packed[offset : offset + 16] == listing_id:
                return offset
        return -1


def changed_by(entry: Entry, payload: ev.EventPayload) -> Entry | None:
    """The record after a listing event (other than registration and delisting)."""
    status, pending = entry.status, entry.pending
    match payload:
        case ev.ListingObjected():
            return _with(entry, status=OBJECTED, pending=min(pending + 1, 255))
        case ev.ListingObjectionResolved():
            pending = max(0, pending - 1)
            if pending == 0 and status == OBJECTED:
                status = NOTICED
            return _with(entry, status=status, pending=pending)
        case ev.ListingTookEffect():
            return _with(entry, status=EFFECTIVE)
        case ev.ListingAmended():
            return _amended(entry, payload.changes)
    return None


def _with(entry: Entry, *, status: int | None = None, pending: int | None = None) -> Entry:
    bits = entry.flags if status is None else (entry.flags & 0x3F) | status << 6
    return entry._replace(flags=bits, pending=entry.pending if pending is None else pending)


def _amended(entry: Entry, changes: dict[str, Any]) -> Entry:
    list_name = LISTS[entry.flags & 3]
    severity = changes.get("severity", SEVERITIES[entry.flags >> 2 & 3])
    intent = changes.get("intent", INTENTS[entry.flags >> 4 & 3])
    updated = entry._replace(flags=flags(list_name, severity, intent, entry.status))
    if "effective_from" in changes:
        updated = updated._replace(start=start_seconds(changes["effective_from"]))
    if "effective_until" in changes:
        updated = updated._replace(end=end_seconds(changes["effective_until"]))
    return updated
