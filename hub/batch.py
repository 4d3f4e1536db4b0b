"""Batch docking: import listings from template rows through the listing service, and read
the listings in force back out for export.

Import checks every row by the same rules as `POST /v1/listings` (`parse_records`, then
`ListingService.prepare_many`, which applies `_check_new`), on behalf of the row's 认定部门 (a
registered agency with the `publish` scope), and records the same events. Rows go in chunks
of 4,000: each chunk's new decisions are appended with one COPY (`write_many`) while the next
chunk is read, parsed and prepared; decisions already in the log answer unchanged or
conflict from one bulk read. A bad row is reported (row, column, reason) and the others go
in; importing the same file again changes nothing.

Export reads the ids of the listings in force from the `listings` read model (a server-side
cursor, in log order) and their current terms from their events, a batch at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import structlog

from adapters.batch import (
    AUTHORITY,
    CNID,
    HEADERS,
    USCC,
    BatchRecord,
    ParsedRow,
    Record,
    RowError,
    column_of,
    parse_records,
)
from hub.bootstrap import Hub
from hub.credit.service import Agency
from hub.errors import HubError
from projections.listings import IN_FORCE
from schemas import events as ev
from schemas.listing import CommandResult

log = structlog.get_logger(__name__)

Row = tuple[int, dict[str, object]]
Answer = tuple[CommandResult, bool] | HubError
_SLICE = 256
"""Rows parsed between two chances for the writer thread to take the GIL."""


@dataclass
class ImportSummary:
    created: int = 0
    unchanged: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list, repr=False)


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

    async def run(
        self, rows: Iterable[Row | Record], progress: Callable[[int], None] | None = None
    ) -> ImportSummary:
        """Import every row; a chunk is written while the next one is read and prepared."""
        listings = self.hub.listings
        writing: asyncio.Task[list[Answer]] | None = None
        written: tuple[list[tuple[ParsedRow, Agency]], list[RowError], int] | None = None
        try:
            for chunk in _chunks(rows, self.chunk):
                ready, errors = await self._prepare(chunk)
                prepared = listings.prepare_many([(a, p.listing) for p, a in ready])
                if writing is not None and written is not None:
                    self._report(*written, await writing, progress)
                writing = asyncio.create_task(
                    listings.write_many(prepared, concurrency=self.concurrency)
                )
                written = (ready, errors, len(chunk))
                await asyncio.sleep(0)  # it starts its COPY, which goes on in a thread
            if writing is not None and written is not None:
                self._report(*written, await writing, progress)
                writing = None
        finally:
            if writing is not None and written is not None:
                # Stopped early (an error, Ctrl-C): the chunk in flight is a COPY in a thread,
                # which cannot be stopped half way. Wait for it and count it, so what the
                # summary and the error report say is what the log holds.
                try:
                    answers = await asyncio.shield(writing)
                except Exception:  # its transaction rolled back; the first error goes on
                    log.warning("import_chunk_not_written", rows=written[2], exc_info=True)
                else:
                    self._report(*written, answers, progress)
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

    def _resolve(self, parsed: ParsedRow) -> Agency | RowError:
        """The row's agency (looked up by `_agency` beforehand), or why it cannot list."""
        code = parsed.authority or self.authority
        if code is None:
            return RowError(parsed.row, AUTHORITY, "a value is required (or pass --authority)")
        if self.authority is not None and code != self.authority:
            reason = f"the file is imported for {self.authority}; this row names {code}"
            return RowError(parsed.row, AUTHORITY, reason)
        agency = self._agencies[code]
        return RowError(parsed.row, AUTHORITY, agency) if isinstance(agency, str) else agency

    async def _prepare(
        self, rows: list[Row | Record]
    ) -> tuple[list[tuple[ParsedRow, Agency]], list[RowError]]:
        """Parse a chunk and find each row's agency: the rows to register and the bad ones."""
        records: list[Record] = [
            (n, tuple(map(v.get, HEADERS)) if isinstance(v, dict) else v) for n, v in rows
        ]
        parsed: list[ParsedRow | list[RowError]] = []
        for start in range(0, len(records), _SLICE):
            parsed += parse_records(records[start : start + _SLICE])
            _pause()
        for code in {p.authority or self.authority for p in parsed if isinstance(p, ParsedRow)}:
            if code is not None:
                await self._agency(code)
        errors: list[RowError] = []
        ready: list[tuple[ParsedRow, Agency]] = []
        for one in parsed:
            if isinstance(one, list):
                errors.append(one[0])  # one line per bad row: its first problem
                continue
            agency = self._resolve(one)
            if isinstance(agency, RowError):
                errors.append(agency)
            else:
                ready.append((one, agency))
        return ready, errors

    def _report(
        self,
        ready: list[tuple[ParsedRow, Agency]],
        errors: list[RowError],
        size: int,
        answers: list[Answer],
        progress: Callable[[int], None] | None,
    ) -> None:
        """Count a written chunk's answers and report its bad rows, in row order."""
        errors.extend(e for e in map(self._tally, ready, answers) if e is not None)
        errors.sort(key=lambda e: e.row)
        self.summary.rejected += len(errors)
        self.summary.errors.extend(errors)
        if self.on_error:
            for error in errors:
                self.on_error(error)
        if progress:
            progress(size)

    def _tally(self, item: tuple[ParsedRow, Agency], answer: Answer) -> RowError | None:
        parsed = item[0]
        if isinstance(answer, HubError):
            subject = USCC if parsed.listing.subject.id.startswith("uscc:") else CNID
            column = column_of(answer.field, subject)
            return RowError(parsed.row, column or (answer.rule or ""), answer.detail)
        if answer[1]:
            self.summary.created += 1
        else:
            self.summary.unchanged += 1
        return None


def _pause() -> None:
    """Not a wait: a zero sleep releases the GIL, so that the thread writing the previous chunk
    takes it now rather than after the 5 ms switch interval, each time it needs it. Called
    every few hundred rows of the CPU work done meanwhile."""
    time.sleep(0)


def _chunks(rows: Iterable[Row | Record], size: int) -> Iterator[list[Row | Record]]:
    """Chunks of `size` rows; the first ones smaller, so that writing starts sooner."""
    batch: list[Row | Record] = []
    limit = min(size, 500)
    for row in rows:
        batch.append(row)
        if not len(batch) & 511:
            _pause()
        if len(batch) >= limit:
            yield batch
            batch = []
            limit = min(size, limit * 2)
    if batch:
        yield batch


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
