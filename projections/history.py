"""The bitemporal history of listings, and point-in-time (as-of) queries.

`listing_history` holds, per listing and per *version* (the listing's state after an event
that changed its effective-time timeline), one row per segment of effective time in which the
listing was in force: `[valid_from, valid_to)` in effective time, and
`[recorded_from_position, recorded_to_position)` / `[recorded_from, recorded_to)` in recorded
time (NULL upper bounds: open). A new version closes the rows of the previous one; rows are
otherwise never changed. Timelines are derived by `projections.history_timeline`.

`list_as_of` pages through a list at an effective instant, by (valid_from, listing_id), from
the index `(list, valid_from, listing_id)`. `subject_timelines` answers for one subject from
the log itself (its listing ids from the `listings` read model, delisted ones included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from projections._runner import EVENTS_TABLE, Connection
from projections.history_timeline import TERMS, Segment, Timeline, fold
from schemas import events as ev
from schemas.log import RawEvent

DDL = """
CREATE TABLE IF NOT EXISTS listing_history (
    listing_id uuid NOT NULL,
    recorded_from_position bigint NOT NULL,
    segment smallint NOT NULL,
    subject_id text NOT NULL,
    subject_name text NOT NULL,
    list text NOT NULL,
    domain text NOT NULL,
    severity text,
    intent text,
    region text NOT NULL,
    authority text NOT NULL,
    decision_no text NOT NULL,
    effective_from timestamptz NOT NULL,
    effective_until timestamptz,
    valid_from timestamptz NOT NULL,
    valid_to timestamptz,
    recorded_to_position bigint,
    recorded_from timestamptz NOT NULL,
    recorded_to timestamptz,
    PRIMARY KEY (listing_id, recorded_from_position, segment)
);
CREATE INDEX IF NOT EXISTS listing_history_list ON listing_history (list, valid_from, listing_id);
"""

COLUMNS = (
    "listing_id",
    "recorded_from_position",
    "segment",
    "subject_id",
    *TERMS,
    "valid_from",
    "valid_to",
    "recorded_to_position",
    "recorded_from",
    "recorded_to",
)


@dataclass(frozen=True, slots=True)
class KnownAt:
    """A moment of recorded time: a log position, or an instant (event timestamps)."""

    position: int | None = None
    time: datetime | None = None


def _listing_events(raws: Sequence[RawEvent]) -> list[tuple[RawEvent, ev.EventPayload]]:
    return [
        (raw, ev.decode_payload(raw.topic, raw.state))
        for raw in raws
        if raw.topic.startswith(ev.LISTING_TOPIC) and raw.topic in ev.EVENT_TYPES
    ]


async def _histories(
    conn: Connection, ids: Sequence[UUID], upto: int
) -> dict[UUID, list[tuple[RawEvent, ev.EventPayload]]]:
    rows = await conn.fetch(
        f"SELECT notification_id, originator_id, originator_version, topic, state "
        f"FROM {EVENTS_TABLE} WHERE originator_id = ANY($1::uuid[]) AND notification_id <= $2 "
        f"ORDER BY originator_id, originator_version",
        list(ids),
        upto,
    )
    out: dict[UUID, list[tuple[RawEvent, ev.EventPayload]]] = {}
    for raw, payload in _listing_events([RawEvent(r[0], r[1], r[2], r[3], r[4]) for r in rows]):
        out.setdefault(raw.originator_id, []).append((raw, payload))
    return out


async def _batch_histories(
    conn: Connection, events: Sequence[RawEvent]
) -> dict[UUID, list[tuple[RawEvent, ev.EventPayload]]]:
    """The whole history, up to the batch's end, of each listing the batch touches. A listing
    whose first event is in the batch has it all there (a batch is every event between two
    positions); only the others' earlier events are read back from the log."""
    histories: dict[UUID, list[tuple[RawEvent, ev.EventPayload]]] = {}
    for raw, payload in _listing_events(events):
        histories.setdefault(raw.originator_id, []).append((raw, payload))
    older = [key for key, history in histories.items() if history[0][0].version != 1]
    if older:
        histories.update(await _histories(conn, older, events[-1].position))
    return histories


def _versions(
    events: Sequence[tuple[RawEvent, ev.EventPayload]], first_new: int
) -> tuple[Timeline | None, list[tuple[int, datetime, list[Segment]]]]:
    """The timeline and its new versions (position, recorded time, segments) from `first_new`."""
    timeline: Timeline | None = None
    current: list[Segment] | None = None
    versions: list[tuple[int, datetime, list[Segment]]] = []
    for raw, payload in events:
        if isinstance(payload, ev.ListingRegistered):
            timeline = Timeline.start(str(raw.originator_id), raw.position, payload)
        elif timeline is not None:
            timeline.apply(raw.position, payload)
        else:
            continue
        segments = timeline.segments()
        if segments != current:
            current = segments
            if raw.position >= first_new:
                versions.append((raw.position, timeline.recorded_at or payload.timestamp, segments))
    return timeline, versions


class HistoryProjection:
    name = "history"
    tables = ("listing_history",)

    async def setup(self, conn: Connection) -> None:
        await conn.execute(DDL)

    async def reset(self, conn: Connection) -> None:
        await conn.execute("TRUNCATE listing_history")

    async def apply(self, conn: Connection, events: Sequence[RawEvent]) -> None:
        histories = await _batch_histories(conn, events)
        if not histories:
            return
        first_new = events[0].position
        closes: list[tuple[UUID, int, datetime]] = []
        records: list[tuple[Any, ...]] = []
        for listing_id, history in histories.items():
            timeline, versions = _versions(history, first_new)
            if timeline is None or not versions:
                continue
            if history[0][0].position < first_new:  # it has rows before: close the open ones
                closes.append((listing_id, versions[0][0], versions[0][1]))
            for i, (position, recorded, segments) in enumerate(versions):
                until = versions[i + 1] if i + 1 < len(versions) else None
                for n, segment in enumerate(segments):
                    records.append(
                        (
                            listing_id,
                            position,
                            n,
                            timeline.subject_id,
                            *segment.terms,
                            segment.valid_from,
                            segment.valid_to,
                            until[0] if until else None,
                            recorded,
                            until[1] if until else None,
                        )
                    )
        if closes:
            await conn.execute(
                "UPDATE listing_history h SET recorded_to_position = c.p, recorded_to = c.t "
                "FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[]) AS c(id, p, t) "
                "WHERE h.listing_id = c.id AND h.recorded_to_position IS NULL",
                [c[0] for c in closes],
                [c[1] for c in closes],
                [c[2] for c in closes],
            )
        if records:
            await conn.copy_records_to_table("listing_history", records=records, columns=COLUMNS)


def _recorded_filter(known: KnownAt | None, arg: int) -> tuple[str, list[Any]]:
    """The SQL condition (and its argument, numbered `arg`) for rows known at `known`."""
    value: int | datetime
    if known is not None and known.position is not None:
        lower, upper, value = "recorded_from_position", "recorded_to_position", known.position
    elif known is not None and known.time is not None:
        lower, upper, value = "recorded_from", "recorded_to", known.time
    else:
        return "recorded_to_position IS NULL", []
    return f"{lower} <= ${arg} AND ({upper} IS NULL OR {upper} > ${arg})", [value]


async def list_as_of(
    conn: Connection,
    list_name: str,
    as_of: datetime,
    known: KnownAt | None,
    *,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[asyncpg.Record]:
    """Listings in force on `list_name` at `as_of`, as known at `known`, one page."""
    args: list[Any] = [list_name, as_of, limit]
    cursor = ""
    if after is not None:
        cursor = "AND (valid_from, listing_id) > ($4, $5) "
        args += [after[0], after[1]]
    recorded, extra = _recorded_filter(known, len(args) + 1)
    return await conn.fetch(
        f"SELECT * FROM listing_history "
        f"WHERE list = $1 AND valid_from <= $2 AND (valid_to IS NULL OR valid_to > $2) "
        f"{cursor}AND {recorded} ORDER BY valid_from, listing_id LIMIT $3",
        *args,
        *extra,
    )


async def subject_timelines(
    conn: Connection, subject_id: str, known: KnownAt | None
) -> list[Timeline]:
    """Each listing of a subject as the log knew it at `known` (None: now), from the log."""
    ids = [
        r[0]
        for r in await conn.fetch(
            "SELECT listing_id FROM listings WHERE subject_id = $1", subject_id
        )
    ]
    if not ids:
        return []
    upto = known.position if known is not None and known.position is not None else 2**62
    timelines = []
    for listing_id, history in (await _histories(conn, ids, upto)).items():
        events = [(raw.position, payload) for raw, payload in history]
        if known is not None and known.time is not None:
            events = _known_by(events, known.time)
        timeline = fold(str(listing_id), events)
        if timeline is not None:
            timelines.append(timeline)
    return timelines


def _known_by(
    events: list[tuple[int, ev.EventPayload]], time: datetime
) -> list[tuple[int, ev.EventPayload]]:
    """The prefix of a listing's events recorded at or before `time` (monotonic recorded time)."""
    out = []
    recorded: datetime | None = None
    for position, payload in events:
        recorded = max(payload.timestamp, recorded or payload.timestamp)
        if recorded > time:
            break
        out.append((position, payload))
    return out
