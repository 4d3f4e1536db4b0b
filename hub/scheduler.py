"""The scheduler: appends the events that time alone makes due, exactly once.

A listing whose `effective_until` has passed already stops counting at that instant (the read
model's queries compare with `now`); the scheduler also appends an `expired` delisting then, so
that subscribers learn of it. A noticed listing whose notice window ended with no objection
pending gets its `TookEffect` event the same way.

Each `Job` finds candidates in the listings read model (partial indexes, keyset pages of
`page_size`, never the whole table) and submits one command per candidate through the group
committer. The command decides on the aggregate, not on the read model, which may lag: a
listing already delisted refuses a second delisting (`hub.errors.Conflict`), so retries, a lagging
read model and two schedulers at once never append a duplicate. One process leads (a PostgreSQL
advisory lock); the others wait and take over when it goes away.

Time is the hub's clock: tests drive a `SettableClock` and call `run_once()` themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

import asyncpg
import structlog
from prometheus_client import Counter, Gauge

from hub.clock import Clock
from hub.credit.application import UnitOfWork
from hub.credit.committer import Command, Committer
from hub.errors import Conflict, HubError
from projections import Connection

log = structlog.get_logger(__name__)

DDL_LOCK_KEY = zlib.crc32(b"credit-hub:scheduler-ddl")

JOBS_RUN = Counter("hub_scheduler_jobs_run_total", "Scheduler job runs.", ["job"])
APPENDED = Counter("hub_scheduler_events_appended_total", "Events the scheduler appended.", ["job"])
FAILURES = Counter("hub_scheduler_job_failures_total", "Scheduler job runs that failed.", ["job"])
NEXT_DUE = Gauge(
    "hub_scheduler_next_due_timestamp_seconds",
    "Unix time at which the job next has work (0: nothing scheduled).",
    ["job"],
)


class Job(Protocol):
    """One kind of timed work: which aggregates are due, and what to append to each."""

    name: str

    async def setup(self, conn: Connection) -> None:
        """Create the indexes the queries need; idempotent."""

    async def due(
        self, conn: Connection, now: datetime, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[tuple[datetime, UUID]]:
        """Up to `limit` (due time, aggregate id) pairs due at `now`, in key order after `after`."""

    async def next_due(self, conn: Connection, now: datetime) -> datetime | None:
        """The earliest due time after `now`, if any."""

    def command(self, aggregate_id: UUID) -> Command:
        """A committer command that appends the due event; returns whether it appended."""


class _DueByColumn:
    """A job whose due listings are those whose `column` has passed, under a `where` filter,
    found by keyset pages over a partial index on (column, listing_id)."""

    name = ""
    column = ""
    where = ""
    index_where = ""

    async def setup(self, conn: Connection) -> None:
        await conn.execute(
            f"CREATE INDEX IF NOT EXISTS listings_{self.column}_due ON listings "
            f"({self.column}, listing_id) WHERE {self.index_where}"
        )

    async def due(
        self, conn: Connection, now: datetime, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[tuple[datetime, UUID]]:
        since, last = after or (datetime.min.replace(tzinfo=now.tzinfo), UUID(int=0))
        rows = await conn.fetch(
            f"SELECT {self.column}, listing_id FROM listings "
            f"WHERE {self.where} AND {self.column} <= $1 "
            f"AND ({self.column}, listing_id) > ($2, $3) "
            f"ORDER BY {self.column}, listing_id LIMIT $4",
            now,
            since,
            last,
            limit,
        )
        return [(r[0], r[1]) for r in rows]

    async def next_due(self, conn: Connection, now: datetime) -> datetime | None:
        value: datetime | None = await conn.fetchval(
            f"SELECT min({self.column}) FROM listings WHERE {self.where} AND {self.column} > $1",
            now,
        )
        return value


class ExpiryJob(_DueByColumn):
    """An `expired` delisting, effective at `effective_until`, for each listing past it."""

    name = "listing_expiry"
    column = "effective_until"
    where = index_where = "status <> 'delisted'"

    def command(self, aggregate_id: UUID) -> Command:
        def expire(uow: UnitOfWork) -> bool:
            listing = uow.get_listing(aggregate_id)
            until = listing.effective_until if listing is not None else None
            if listing is None or until is None or until > uow.now:
                return False  # extended by an amendment the read model has not seen yet
            listing.delist(
                reason="expired",
                note="the publication period ended",
                effective_at=until,
                now=uow.now,
            )  # Conflict when already delisted: never twice
            return True

        return expire


class TakeEffectJob(_DueByColumn):
    """`TookEffect` for noticed listings whose window ended with no objection pending."""

    name = "listing_take_effect"
    column = "notice_until"
    index_where = "status = 'noticed'"
    where = "status = 'noticed' AND pending_objections = 0"

    def command(self, aggregate_id: UUID) -> Command:
        def take_effect(uow: UnitOfWork) -> bool:
            listing = uow.get_listing(aggregate_id)
            return listing is not None and listing.take_effect(now=uow.now)

        return take_effect


async def lock_key(conn: Connection) -> int:
    """The leader's advisory lock, per schema (advisory locks are per database)."""
    schema = await conn.fetchval("SELECT current_schema()")
    return zlib.crc32(f"credit-hub:scheduler:{schema}".encode())


def default_jobs() -> list[Job]:
    return [ExpiryJob(), TakeEffectJob()]


class Scheduler:
    def __init__(
        self,
        pool: asyncpg.Pool,
        committer: Committer,
        clock: Clock,
        jobs: Sequence[Job] | None = None,
        *,
        page_size: int = 256,
        poll_seconds: float = 5.0,
    ) -> None:
        self.pool = pool
        self.committer = committer
        self.clock = clock
        self.jobs: list[Job] = list(default_jobs() if jobs is None else jobs)
        self.page_size = page_size
        self.poll_seconds = poll_seconds
        self.next_due: datetime | None = None

    def add_job(self, job: Job) -> None:
        self.jobs.append(job)

    async def setup(self) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", DDL_LOCK_KEY)
            for job in self.jobs:
                await job.setup(conn)

    async def run_once(self) -> int:
        """Run every job for what is due now; returns how many events were appended."""
        now = self.clock.now()
        appended = 0
        upcoming: list[datetime] = []
        for job in self.jobs:
            try:
                appended += await self._run_job(job, now)
                async with self.pool.acquire() as conn:
                    later = await job.next_due(conn, now)
            except Exception:  # one job's fault must not stop the others; retried next tick
                log.exception("scheduler_job_failed", job=job.name)
                FAILURES.labels(job.name).inc()
                continue
            NEXT_DUE.labels(job.name).set(later.timestamp() if later else 0)
            if later is not None:
                upcoming.append(later)
        self.next_due = min(upcoming, default=None)
        return appended

    tick = run_once

    async def _run_job(self, job: Job, now: datetime) -> int:
        JOBS_RUN.labels(job.name).inc()
        appended = 0
        after: tuple[datetime, UUID] | None = None
        while True:
            async with self.pool.acquire() as conn:
                page = await job.due(conn, now, after, self.page_size)
            if not page:
                break
            outcomes = await asyncio.gather(
                *(self.committer.submit(job.command(aggregate_id)) for _, aggregate_id in page),
                return_exceptions=True,
            )
            for outcome in outcomes:
                if isinstance(outcome, tuple) and outcome[0] is True:
                    appended += 1
                elif isinstance(outcome, Conflict):
                    continue  # done already, by us before the read model caught up or by a peer
                elif isinstance(outcome, BaseException):
                    log.warning("scheduler_command_failed", job=job.name, error=str(outcome))
                    if not isinstance(outcome, HubError):
                        raise outcome
            after = page[-1]
            if len(page) < self.page_size:
                break
        APPENDED.labels(job.name).inc(appended)
        if appended:
            log.info("scheduler_appended", job=job.name, events=appended)
        return appended

    def _delay(self) -> float:
        if self.next_due is None:
            return self.poll_seconds
        wait = (self.next_due - self.clock.now()).total_seconds()
        return min(max(wait, 0.05), self.poll_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Lead (advisory lock), then run the jobs whenever something falls due until `stop`."""
        async with self.pool.acquire() as lock_conn:
            key = await lock_key(lock_conn)
            while not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.poll_seconds)
                if stop.is_set():
                    return
            try:
                while not stop.is_set():
                    try:
                        await self.run_once()
                    except Exception as exc:  # the database is down: retry after a poll
                        log.warning("scheduler_retry", error=str(exc))
                        self.next_due = None
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self._delay())
            finally:
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    await lock_conn.execute("SELECT pg_advisory_unlock($1)", key)
