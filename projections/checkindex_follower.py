"""Keeps the check index and the measure catalogue current from the credit log.

At start it loads the listings read model's rows that are not delisted (streamed through a
cursor, never fetched whole) together with that read model's position, in one snapshot, and
the catalogue's events up to that position. Then it follows the log after that position,
applying listing and catalogue events in Python: woken by the committer after each commit and
by NOTIFY, and polling in between. Its `position` is the last log position the index reflects;
`wait_for()` lets a check read its caller's own writes.

Listing events other than `Registered` carry no subject; the follower finds it in the
listing's first event (one query per batch), so the index needs no second map by listing id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from uuid import UUID

import asyncpg
import structlog
from prometheus_client import Gauge

from projections._runner import EVENTS_TABLE, Connection, max_position, read_events
from projections.audit import leaf_count_at
from projections.checkindex import (
    EFFECTIVE,
    NOTICED,
    RECORD,
    STATUSES,
    CheckIndex,
    changed_by,
    end_seconds,
    flags,
    start_seconds,
    subject_key,
)
from schemas import catalogue_events as cev
from schemas import events as ev
from schemas.catalogue import Measure
from schemas.log import RawEvent

log = structlog.get_logger(__name__)

INDEX_LISTINGS = Gauge("hub_check_index_listings", "Listings (not delisted) in the check index.")
INDEX_SUBJECTS = Gauge("hub_check_index_subjects", "Subjects in the check index.")
INDEX_POSITION = Gauge("hub_check_index_position", "Last log position the check index applied.")
INDEX_LAG_EVENTS = Gauge(
    "hub_check_index_lag_events", "Log events the check index has not applied."
)
INDEX_LAG_SECONDS = Gauge(
    "hub_check_index_lag_seconds", "Seconds since the check index last saw the head of the log."
)

_LISTING = ev.LISTING_TOPIC + "."
_CATALOGUE = cev.CATALOGUE_TOPIC + "."
_LOAD = (
    "SELECT listing_id, subject_id, list, domain, severity, intent, region, effective_from, "
    "effective_until, notice_until, status, pending_objections FROM listings "
    "WHERE status <> 'delisted'"
)


class CatalogueState:
    """The measures by code and the catalogue version, as of the follower's position."""

    def __init__(self) -> None:
        self.measures: dict[str, Measure] = {}
        self.version = 0

    def apply(self, event: RawEvent, payload: ev.EventPayload) -> None:
        if isinstance(payload, cev.CatalogueMeasurePut):
            self.measures[payload.measure.code] = payload.measure
        self.version = event.version


class IndexFollower:
    def __init__(self, pool: asyncpg.Pool, index: CheckIndex, *, batch_size: int = 5000) -> None:
        self.pool = pool
        self.index = index
        self.batch_size = batch_size
        self.catalogue = CatalogueState()
        self.position = 0
        self.tree_size = 0
        """Events at positions <= `position`: the verifiable log's size that answers rest on."""
        self.wakeup = asyncio.Event()
        self._moved = asyncio.Event()
        self._caught_up_at = time.monotonic()

    # -- start ---------------------------------------------------------------------------

    async def load(self, *, prefetch: int = 5000) -> int:
        """Fill the index from the listings read model; returns the listings loaded."""
        loaded = 0
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            try:
                position = await conn.fetchval(
                    "SELECT position FROM projection_positions WHERE name = 'listings'"
                )
                cursor = conn.cursor(_LOAD, prefetch=prefetch)
                async for row in cursor:
                    self._load_row(row)
                    loaded += 1
            except asyncpg.UndefinedTableError:
                position = 0
            position = int(position or 0)
            for raw in await conn.fetch(
                "SELECT notification_id, originator_id, originator_version, topic, state "
                "FROM credit_events WHERE originator_id = $1 AND notification_id <= $2 "
                "ORDER BY originator_version",
                cev.CATALOGUE_ID,
                position,
            ):
                event = RawEvent(raw[0], raw[1], raw[2], raw[3], raw[4])
                self.catalogue.apply(event, ev.decode_payload(event.topic, event.state))
            self.tree_size = await leaf_count_at(conn, position)
        self._advance(position)
        log.info("check_index_loaded", listings=loaded, position=position)
        return loaded

    def _load_row(self, row: asyncpg.Record) -> None:
        index = self.index
        record = index.pack(
            row[0].bytes,
            start=start_seconds(row[7]),
            end=end_seconds(row[8]),
            notice=0 if row[9] is None else end_seconds(row[9]),
            domain=row[3],
            region=row[6],
            flags=flags(row[2], row[4], row[5], STATUSES[row[10]]),
            pending=row[11],
        )
        index.add(subject_key(row[1]), record)

    # -- following -----------------------------------------------------------------------

    async def catch_up(self) -> int:
        total = 0
        while True:
            async with self.pool.acquire() as conn:
                events = await read_events(conn, self.position, self.batch_size)
                if events:
                    await self.apply(conn, events)
                    # no await between the index changing and its position moving: a check
                    # must never see the new state under the old position (replay relies on it)
                    self.tree_size += len(events)
                    self._advance(events[-1].position)
            if not events:
                self._caught_up_at = time.monotonic()
                INDEX_LAG_EVENTS.set(0)
                INDEX_LAG_SECONDS.set(0)
                return total
            total += len(events)

    async def apply(self, conn: Connection, events: Sequence[RawEvent]) -> None:
        decoded: list[tuple[RawEvent, ev.EventPayload]] = []
        subjects: dict[UUID, str] = {}
        for event in events:
            topic = event.topic
            if topic.startswith((_LISTING, _CATALOGUE)):
                try:
                    payload = ev.decode_payload(topic, event.state)
                except KeyError:  # an event type this reader does not know: not ours to apply
                    continue
                decoded.append((event, payload))
                if isinstance(payload, ev.ListingRegistered):
                    subjects[event.originator_id] = payload.subject_id
        missing = {
            e.originator_id
            for e, p in decoded
            if e.topic.startswith(_LISTING) and e.originator_id not in subjects
        }
        if missing:
            subjects.update(await _subjects_of(conn, missing))
        for event, payload in decoded:
            if event.topic.startswith(_CATALOGUE):
                self.catalogue.apply(event, payload)
            elif event.originator_id in subjects:
                self._apply_listing(subject_key(subjects[event.originator_id]), event, payload)

    def _apply_listing(self, key: int, event: RawEvent, payload: ev.EventPayload) -> None:
        index = self.index
        listing_id = event.originator_id.bytes
        if isinstance(payload, ev.ListingRegistered):
            status = NOTICED if payload.notice_until is not None else EFFECTIVE
            record = index.pack(
                listing_id,
                start=start_seconds(payload.effective_from),
                end=end_seconds(payload.effective_until),
                notice=0 if payload.notice_until is None else end_seconds(payload.notice_until),
                domain=payload.domain,
                region=payload.region,
                flags=flags(payload.list, payload.severity, payload.intent, status),
            )
            index.add(key, record)
            return
        if isinstance(payload, ev.ListingDelisted):
            index.remove(key, listing_id)
            return
        entry = index.find(key, listing_id)
        if entry is None:  # delisted already, or an event for a listing this index never held
            return
        changed = changed_by(entry, payload)
        if changed is not None:
            index.add(key, RECORD.pack(*changed))

    def _advance(self, position: int) -> None:
        self.position = position
        INDEX_POSITION.set(position)
        INDEX_LISTINGS.set(self.index.listings)
        INDEX_SUBJECTS.set(len(self.index.subjects))
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def wait_for(self, position: int, within: float) -> bool:
        """Wait until the index has applied `position`; False after `within` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.position < position:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.wakeup.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), min(remaining, 0.05))
        return True

    async def run(
        self, stop: asyncio.Event, *, poll_seconds: float = 0.5, listen_url: str | None = None
    ) -> None:
        """Follow the log until `stop` is set; with `listen_url`, also woken by NOTIFY."""
        listener = None
        if listen_url is not None:
            with contextlib.suppress(asyncpg.PostgresError, OSError):
                listener = await asyncpg.connect(listen_url)
                await listener.add_listener(EVENTS_TABLE, lambda *_: self.wakeup.set())
        try:
            await self._follow(stop, poll_seconds)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await listener.close()

    async def _follow(self, stop: asyncio.Event, poll_seconds: float) -> None:
        last_lag, failures = 0.0, 0
        while not stop.is_set():
            self.wakeup.clear()
            try:
                await self.catch_up()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("check_index_retry", error=str(exc))
                INDEX_LAG_SECONDS.set(time.monotonic() - self._caught_up_at)
                await asyncio.sleep(poll_seconds)
                continue
            except Exception:
                # A batch it cannot apply (a bug, an event it cannot read) used to end the
                # task, and checks went on answering from an index that no longer moved. Say
                # so, and try the batch again with growing pauses; it is never skipped, and
                # the lag metrics show the index standing still. (Applying a batch again is
                # safe: records are replaced by listing id, removals and changes are
                # idempotent.)
                failures += 1
                log.exception("check_index_failed", position=self.position)
                INDEX_LAG_SECONDS.set(time.monotonic() - self._caught_up_at)
                await asyncio.sleep(min(30.0, poll_seconds * 2 ** min(failures, 6)))
                continue
            failures = 0
            if time.monotonic() - last_lag > 5 * poll_seconds:
                last_lag = time.monotonic()
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    async with self.pool.acquire() as conn:
                        INDEX_LAG_EVENTS.set(max(0, await max_position(conn) - self.position))
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.wakeup.wait()),
            ]
            await asyncio.wait(waiters, timeout=poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()


async def _subjects_of(conn: Connection, ids: set[UUID]) -> dict[UUID, str]:
    """The subject of each listing, from its `Registered` event (version 1)."""
    rows = await conn.fetch(
        "SELECT originator_id, topic, state FROM credit_events "
        "WHERE originator_id = ANY($1::uuid[]) AND originator_version = 1",
        list(ids),
    )
    found: dict[UUID, str] = {}
    for row in rows:
        with contextlib.suppress(KeyError):
            payload = ev.decode_payload(row[1], row[2])
            if isinstance(payload, ev.ListingRegistered):
                found[row[0]] = payload.subject_id
    return found
