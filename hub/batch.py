"""Batch docking: import listings from template rows through the listing service, and read
the listings in force back out for export.

Import checks every row by the same rules as `POST /v1/listings`, on behalf of the row's
认定部门 (a registered agency with the `publish` scope), and records the same events. Rows go
in chunks of 4,000, each written while the next is read, parsed and prepared. A chunk's plain
rows are parsed by columns (`adapters.batch.parse_columns`), checked one group of alike rows
at a time (`ListingService.prepare_many` on one row of each group) and encoded by columns
(`hub.batch_events`); the other rows are parsed and prepared row by row (`parse_records`,
`prepare_many`). The chunk's new decisions are appended with one COPY (`_append_fresh`);
decisions already in the log or repeated within the chunk then go through `write_many`,
which answers unchanged or conflict. A bad row is reported (row, column, reason) and the
others go in; importing the same file again changes nothing.

Export reads the ids of the listings in force from the `listings` read model (a server-side
cursor, in log order) and their current terms from their events, a batch at a time.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import structlog
from eventsourcing.persistence import IntegrityError

from adapters.batch import (
    AUTHORITY,
    CNID,
    HEADERS,
    USCC,
    BatchRecord,
    Columns,
    ParsedRow,
    Record,
    RowError,
    column_of,
    parse_columns,
)
from adapters.batch_files import Chunk, Records
from hub.batch_copy import LogCopier, copy_payload
from hub.batch_events import encode_events
from hub.bootstrap import Hub
from hub.credit.service import _REGISTERED_TOPIC, Agency, PreparedListings
from hub.errors import HubError
from projections.listings import IN_FORCE
from schemas import events as ev
from schemas.listing import CommandResult, NewListing

log = structlog.get_logger(__name__)

Row = tuple[int, dict[str, object]]
Answer = tuple[CommandResult, bool] | HubError
_SWITCH = 0.0001
"""The GIL switch interval while importing (default 5 ms)."""


@dataclass
class ImportSummary:
    created: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list, repr=False)


@dataclass
class _Later:
    """A row that goes in through `write_many` after its chunk's COPY: a decision that is
    already in the log, or repeated within the chunk."""

    row: int
    agency: Agency
    listing: NewListing


@dataclass
class _Plan:
    """A chunk, parsed and prepared: the events of its new decisions, in row order, and what
    else its rows need."""

    size: int
    events: list[tuple[bytes, bytes]]
    sources: list[int | tuple[Agency, ParsedRow]]  # events[i]'s row: in `columns`, or parsed
    later: list[_Later]  # rows that go through `write_many` after the COPY
    errors: list[RowError]
    now: datetime
    columns: Columns
    authority: list[str] = field(default_factory=list)  # the agency of each row of `columns`
    agencies: dict[str, Agency | str] = field(default_factory=dict)
    payload: bytes | None = None  # the COPY of `events` (`copy_payload`), made in advance

    def row(self, i: int) -> _Later:
        """events[i]'s row, for when it goes in through `write_many` after all."""
        source = self.sources[i]
        if isinstance(source, tuple):
            return _Later(source[1].row, source[0], source[1].listing)
        agency = self.agencies[self.authority[source]]
        assert isinstance(agency, Agency)  # noqa: S101 - rows of other agencies are refused
        return _Later(self.columns.rows[source], agency, self.columns.listing(source))


@dataclass
class _Written:
    created: int = 0
    unchanged: int = 0
    errors: list[RowError] = field(default_factory=list)


class Importer:
    """Import template rows into a started hub; `on_error` hears of each bad row in order."""

    def __init__(
        self,
        hub: Hub,
        *,
        authority: str | None = None,
        concurrency: int = 512,
        chunk: int = 4000,
        on_error: Callable[[RowError], None] | None = None,
    ) -> None:
        self.hub = hub
        self.authority = authority
        self.chunk = chunk
        self.on_error = on_error
        self.concurrency = concurrency
        self._agencies: dict[str, Agency | str] = {}
        self.summary = ImportSummary()
        app = hub.listings.committer.app
        self._copier: LogCopier | None = None
        url = hub.settings.database_url
        if url and not (app.mapper.compressor or app.mapper.cipher):  # else as `write_many`
            schema = app.recorder.datastore.schema  # type: ignore[attr-defined]
            self._copier = LogCopier(url, schema)

    async def run(
        self,
        rows: Iterable[Row | Record] | Records,
        progress: Callable[[int], None] | None = None,
    ) -> ImportSummary:
        """Import every row; a chunk is written while the next one is read and prepared."""
        sizes = _sizes(self.chunk)
        chunks = rows.chunks(sizes) if isinstance(rows, Records) else _chunks(rows, sizes)
        writing: asyncio.Task[_Written] | None = None
        written: _Plan | None = None
        with _no_cyclic_collection():
            try:
                for numbers, records in chunks:
                    plan = await self._plan(numbers, records)
                    if writing is not None and written is not None:
                        self._report(written, await writing, progress)
                    writing = asyncio.create_task(self._write(plan))
                    written = plan
                    await asyncio.sleep(0)  # it starts its COPY, which goes on in a thread
                if writing is not None and written is not None:
                    self._report(written, await writing, progress)
                    writing = None
            finally:
                if writing is not None and written is not None:
                    # Stopped early (an error, Ctrl-C): the chunk in flight is a COPY in a
                    # thread, which cannot be stopped half way. Wait for it and count it, so
                    # what the summary and the error report say is what the log holds.
                    try:
                        done = await asyncio.shield(writing)
                    except Exception:  # its transaction rolled back; the first error goes on
                        log.warning("import_chunk_not_written", rows=written.size, exc_info=True)
                    else:
                        self._report(written, done, progress)
                if self._copier is not None:
                    self._copier.close()
        return self.summary

    async def _agency(self, code: str) -> Agency | str:
        """The agency, or why it cannot list."""
        if code not in self._agencies:
            record = await self.hub.pool.fetchrow(
                "SELECT code, name, scopes, domains FROM agencies WHERE code = $1", code
            )
            if record is None:
                self._agencies[code] = f"agency {code!r} is not registered with the hub"
            elif "publish" not in record["scopes"]:
                self._agencies[code] = f"agency {code!r} lacks the scope 'publish'"
            else:
                scopes, domains = frozenset(record["scopes"]), frozenset(record["domains"])
                self._agencies[code] = Agency(record["code"], record["name"], scopes, domains)
        return self._agencies[code]

    def _resolve(self, code: str | None) -> Agency | str:
        """The agency of a row naming `code` in 认定部门 (looked up by `_agency` beforehand),
        or why the row cannot list."""
        code = code or self.authority
        if code is None:
            return "a value is required (or pass --authority)"
        if self.authority is not None and code != self.authority:
            return f"the file is imported for {self.authority}; this row names {code}"
        return self._agencies[code]

    async def _plan(self, numbers: list[int], records: Sequence[Sequence[object]]) -> _Plan:
        """Parse and check a chunk and encode the events of its new decisions."""
        listings = self.hub.listings
        columns, others = parse_columns(numbers, records)
        _pause()
        parsed = [p for p in others if isinstance(p, ParsedRow)]
        errors = [p[0] for p in others if isinstance(p, list)]  # a bad row: its first problem
        for code in {*columns.authority, *(p.authority or "" for p in parsed)}:
            if code or self.authority:
                await self._agency(code or self.authority or "")
        now = listings.clock.now()
        columns, authority = self._check(columns, errors)
        days = listings.rules.notice_days
        notice_until = listings.calendar.deadline(now, days) if days > 0 else None
        events = encode_events(columns, authority, now=now, notice_until=notice_until)
        _pause()
        plan = _Plan(len(numbers), events, [*range(len(events))], [], errors, now, columns)
        plan.authority = authority
        plan.agencies = self._agencies
        self._add_parsed(plan, parsed)
        ids = [k for k, _ in plan.events]
        if len(set(ids)) < len(ids):  # a decision repeated: its first row is new, the rest later
            first = dict(zip(reversed(ids), range(len(ids) - 1, -1, -1), strict=True))
            keep = sorted(first.values())
            plan.later += (plan.row(i) for i in sorted(set(range(len(ids))) - set(keep)))
            plan.events = [plan.events[i] for i in keep]
            plan.sources = [plan.sources[i] for i in keep]
        if self._copier is not None:
            plan.payload = copy_payload(_REGISTERED_TOPIC, plan.events)
        return plan

    def _add_parsed(self, plan: _Plan, parsed: list[ParsedRow]) -> None:
        """Add the rows that the columns did not take, prepared by `prepare_many`, in row
        order among the others."""
        ready: list[tuple[Agency, ParsedRow]] = []
        for one in parsed:
            agency = self._resolve(one.authority)
            if isinstance(agency, str):
                plan.errors.append(RowError(one.row, AUTHORITY, agency))
            else:
                ready.append((agency, one))
        if not ready:
            return
        prepared = self.hub.listings.prepare_many([(a, p.listing) for a, p in ready])
        fresh = {k: i for k, (i, _) in prepared.fresh.items()}
        for i, ((agency, one), answer) in enumerate(zip(ready, prepared.answers, strict=True)):
            if isinstance(answer, HubError):
                plan.errors.append(_row_error(one, answer))
            elif answer is None and i not in fresh.values():  # repeated: after the COPY
                plan.later.append(_Later(one.row, agency, one.listing))
        rows = [*plan.columns.rows, *(ready[fresh[k]][1].row for k, _ in prepared.events)]
        order = sorted(range(len(rows)), key=rows.__getitem__)
        events = [*plan.events, *prepared.events]
        sources = [*plan.sources, *(ready[fresh[k]] for k, _ in prepared.events)]
        plan.events = [events[i] for i in order]
        plan.sources = [sources[i] for i in order]

    def _check(self, columns: Columns, errors: list[RowError]) -> tuple[Columns, list[str]]:
        """The rows that pass the rules of `POST /v1/listings`, with their agencies' codes;
        the others' errors added to `errors`.

        What the rules answer for a plain row depends only on its agency, region, domain,
        list, severity, intent and period (see `ListingService._check_new_memo`): one row of
        each such group goes through `prepare_many`, and its answer is the group's."""
        if not columns.rows:
            return columns, []
        agencies = {code: self._resolve(code) for code in set(columns.authority)}
        authority = columns.authority
        if "" in agencies:
            default = self.authority or ""
            authority = [code or default for code in authority]
        key_columns: tuple[list[Any], ...] = (
            columns.authority, columns.region, columns.domain, columns.list_name,
            columns.severity, columns.intent, columns.effective_from, columns.effective_until,
        )  # fmt: skip
        first = _groups(key_columns)
        refused: dict[tuple[Any, ...], tuple[str, str]] = {}
        for key, i in first.items():
            agency = agencies[key[0]]
            if isinstance(agency, str):
                refused[key] = (AUTHORITY, agency)
                continue
            answer = self.hub.listings.prepare_many([(agency, columns.listing(i))]).answers[0]
            if isinstance(answer, HubError):
                refused[key] = (column_of(answer.field, USCC) or answer.rule or "", answer.detail)
        if not refused:
            return columns, authority
        keys = [*zip(*key_columns, strict=True)]
        keep = []
        for i, key in enumerate(keys):
            if key in refused:
                errors.append(RowError(columns.rows[i], *refused[key]))
            else:
                keep.append(i)
        return columns.select(keep), [authority[i] for i in keep]

    async def _write(self, plan: _Plan) -> _Written:
        """Append a chunk's new decisions (one COPY), then the rest through `write_many`."""
        listings = self.hub.listings
        done = _Written()
        later = plan.later
        if plan.events:
            appended = await self._append(plan)
            done.created = len(appended)
            if len(appended) < len(plan.events):  # decisions already in the log
                new = {k for k, _ in appended}
                missing = (i for i, (k, _) in enumerate(plan.events) if k not in new)
                later = [*later, *map(plan.row, missing)]
        if later:
            later = sorted(later, key=lambda one: one.row)
            items = [(one.agency, one.listing) for one in later]
            prepared = PreparedListings(items, plan.now, [None] * len(items), {}, [], {})
            answers = await listings.write_many(prepared, concurrency=self.concurrency)
            for one, answer in zip(later, answers, strict=True):
                if isinstance(answer, HubError):
                    done.errors.append(_row_error(one, answer))
                elif answer[1]:
                    done.created += 1
                else:
                    done.unchanged += 1
        return done

    async def _append(self, plan: _Plan) -> list[tuple[bytes, bytes]]:
        """COPY the chunk's new decisions: the events written. Optimistic, as
        `ListingService._append_fresh`: when the COPY meets a decision already in the log,
        the existing ones are looked up in one query and the rest copied again."""
        listings = self.hub.listings
        if self._copier is None:
            fresh = await listings._append_fresh(plan.events)  # noqa: SLF001 - its bulk half
            return [event for event, _ in fresh]
        events, payload = plan.events, plan.payload
        for attempt in range(2):
            try:
                data = payload or copy_payload(_REGISTERED_TOPIC, events)
                await asyncio.to_thread(self._copier.copy, data)
            except IntegrityError:
                if attempt:
                    return []  # a concurrent writer: everything goes one by one
                ids = [UUID(bytes=listing_id) for listing_id, _ in events]
                app = listings.committer.app
                existing = {i.bytes for i in await asyncio.to_thread(app.existing_ids, ids)}
                events = [event for event in events if event[0] not in existing]
                payload = None
                if not events:
                    return []
                continue
            return events
        return []

    def _report(self, plan: _Plan, done: _Written, progress: Callable[[int], None] | None) -> None:
        """Count a written chunk and report its bad rows, in row order."""
        errors = sorted([*plan.errors, *done.errors], key=lambda e: e.row)
        self.summary.created += done.created
        self.summary.unchanged += done.unchanged
        self.summary.rejected += len(errors)
        self.summary.errors.extend(errors)
        if self.on_error:
            for error in errors:
                self.on_error(error)
        if progress:
            progress(plan.size)


def _groups(key_columns: tuple[list[Any], ...]) -> dict[tuple[Any, ...], int]:
    """The distinct keys of the rows (their values in `key_columns`), each with the index of
    its first row; without a tuple per row when every row has the same key (often)."""
    if all(column.count(column[0]) == len(column) for column in key_columns):
        return {tuple(column[0] for column in key_columns): 0}
    keys = [*zip(*key_columns, strict=True)]
    return dict(zip(reversed(keys), range(len(keys) - 1, -1, -1), strict=True))


def _row_error(one: ParsedRow | _Later, answer: HubError) -> RowError:
    """A refusal of the rules as a bad row: the column it is about, and why."""
    subject = USCC if one.listing.subject.id.startswith("uscc:") else CNID
    column = column_of(answer.field, subject)
    return RowError(one.row, column or (answer.rule or ""), answer.detail)


@contextmanager
def _no_cyclic_collection() -> Iterator[None]:
    """No cyclic garbage collection while importing: the rows of a chunk are many small
    containers, freed by reference counting, and a collection every 700 of them scans them
    all (a quarter of the import's time) for nothing. Collections resume afterwards."""
    enabled = gc.isenabled()
    interval = sys.getswitchinterval()
    gc.disable()
    sys.setswitchinterval(_SWITCH)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        if enabled:
            gc.enable()


def _pause() -> None:
    """Not a wait: a zero sleep releases the GIL, so that the thread writing the previous chunk
    takes it now rather than after the 5 ms switch interval, each time it needs it. Called
    between the steps of the CPU work done meanwhile."""
    time.sleep(0)


def _sizes(most: int) -> Iterator[int]:
    """Chunk sizes: the first ones smaller, so that writing starts sooner."""
    size = min(most, 500)
    while True:
        yield size
        size = min(most, size * 2)


def _chunks(rows: Iterable[Row | Record], sizes: Iterator[int]) -> Iterator[Chunk]:
    """Rows (as `read_rows` or `read_records` give them) in chunks, in `HEADERS` order."""
    numbers: list[int] = []
    batch: list[Sequence[object]] = []
    limit = next(sizes)
    for number, values in rows:
        numbers.append(number)
        batch.append(tuple(map(values.get, HEADERS)) if isinstance(values, dict) else values)
        if len(batch) >= limit:
            yield numbers, batch
            numbers, batch, limit = [], [], next(sizes)
    if batch:
        yield numbers, batch


async def export_records(
    hub: Hub, *, list_name: str | None = None, batch: int = 1000
) -> AsyncIterator[list[BatchRecord]]:
    """The listings in force now, in log order, in batches, with their current terms."""
    where = f"({IN_FORCE.replace('$2', '$1')})" + (" AND list = $2" if list_name else "")
    args: list[Any] = [hub.clock.now()] + ([list_name] if list_name else [])
    sql = f"SELECT listing_id FROM listings WHERE {where} ORDER BY position"
    async with hub.pool.acquire() as conn, hub.pool.acquire() as reader, conn.transaction():
        ids: list[UUID] = []
        async for record in conn.cursor(sql, *args, prefetch=batch):
            ids.append(record[0])
            if len(ids) >= batch:
                yield await _records(reader, ids)
                ids = []
        if ids:
            yield await _records(reader, ids)


async def _records(conn: Any, ids: list[UUID]) -> list[BatchRecord]:
    rows = await conn.fetch(
        "SELECT originator_id, topic, state FROM credit_events "
        "WHERE originator_id = ANY($1::uuid[]) ORDER BY originator_id, originator_version",
        ids,
    )
    state: dict[UUID, dict[str, Any]] = {}
    for originator, topic, data in rows:
        if topic not in ev.EVENT_TYPES:
            continue
        payload = ev.decode_payload(topic, data)
        if isinstance(payload, ev.ListingRegistered):
            state[originator] = {f: getattr(payload, f) for f in BatchRecord.__struct_fields__}
        elif isinstance(payload, ev.ListingAmended) and originator in state:
            for key, value in payload.changes.items():
                if key in state[originator]:
                    state[originator][key] = value
    return [BatchRecord(**state[i]) for i in ids if i in state]


async def wait_for_listings(hub: Hub, within: float) -> bool:
    """Wait until the listings read model has applied the whole log as it is now."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    head = await hub.pool.fetchval("SELECT coalesce(max(notification_id), 0) FROM credit_events")
    while True:
        done = await hub.pool.fetchval(
            "SELECT position FROM projection_positions WHERE name = 'listings'"
        )
        if (done or 0) >= head:
            return True
        if loop.time() >= deadline:
            return False
        hub.wake_projections()
        await asyncio.sleep(0.05)
