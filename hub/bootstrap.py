"""The composition root: pools, the credit application, the committer, services and
projections, built in one place and started and stopped together.

Nothing here runs at import time. `build_hub()` is what `create_app()`'s lifespan and the CLI
call; tests call it with a `SettableClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from psycopg.conninfo import conninfo_to_dict

from hub.agencies import DDL as AGENCIES_DDL
from hub.agencies import Agencies
from hub.clock import Clock, SystemClock
from hub.credit.application import EVENTS_TABLE, CreditApplication
from hub.credit.committer import Committer
from hub.credit.service import ListingService
from hub.settings import Settings
from hub.workdays import WorkingCalendar
from projections import ProjectionRunner
from projections.listings import ListingsProjection

log = structlog.get_logger(__name__)
SETUP_LOCK = zlib.crc32(b"credit-hub:schema-setup")


def eventsourcing_env(url: str, schema: str) -> dict[str, str]:
    """eventsourcing's PostgreSQL settings from a libpq URL."""
    info = conninfo_to_dict(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": str(info.get("dbname") or info.get("user") or "postgres"),
        "POSTGRES_HOST": str(info.get("host") or "127.0.0.1"),
        "POSTGRES_PORT": str(info.get("port") or "5432"),
        "POSTGRES_USER": str(info.get("user") or "postgres"),
        "POSTGRES_PASSWORD": str(info.get("password") or ""),
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_MAX_OVERFLOW": "4",
        "CREATE_TABLE": "y",
    }


@dataclass
class Hub:
    settings: Settings
    clock: Clock
    calendar: WorkingCalendar
    app: CreditApplication
    pool: asyncpg.Pool
    committer: Committer
    listings: ListingService
    agencies: Agencies
    runners: dict[str, ProjectionRunner]
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _listener: asyncpg.Connection | None = None

    def wake_projections(self, *_: object) -> None:
        for runner in self.runners.values():
            runner.wakeup.set()

    async def start(self) -> None:
        await self.committer.start()
        self.committer.on_commit = self.wake_projections
        if self.settings.run_projections:
            self._listener = await asyncpg.connect(
                self.settings.database_url,
                server_settings={"search_path": self.settings.database_schema},
            )
            await self._listener.add_listener(EVENTS_TABLE, self.wake_projections)
            for runner in self.runners.values():
                self._tasks.append(asyncio.create_task(runner.run(self._stop)))

    async def wait_for_projections(self, position: int, within: float) -> bool:
        """Wait until every projection has applied `position`; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while any(r.position < position for r in self.runners.values()):
            if loop.time() >= deadline:
                return False
            self.wake_projections()
            await asyncio.sleep(0.002)
        return True

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        await self.committer.stop()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        await self.pool.close()
        await asyncio.to_thread(self.app.close)


async def build_hub(settings: Settings, clock: Clock | None = None) -> Hub:
    if not settings.database_url:
        raise RuntimeError("HUB_DATABASE_URL is not set: run `hub up` for the embedded default")
    schema = settings.database_schema
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", SETUP_LOCK)
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        app = await asyncio.to_thread(
            CreditApplication, eventsourcing_env(settings.database_url, schema)
        )
        await conn.execute(f'SET search_path TO "{schema}"')
        await conn.execute(AGENCIES_DDL)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", SETUP_LOCK)
        await conn.close()
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=settings.db_pool_size,
        server_settings={"search_path": schema},
    )
    clock = clock or SystemClock()
    calendar = WorkingCalendar()
    committer = Committer(app, clock, max_batch=settings.commit_batch_max)
    runners = {"listings": ProjectionRunner(pool, ListingsProjection())}
    for runner in runners.values():
        await runner.setup()
    return Hub(
        settings=settings,
        clock=clock,
        calendar=calendar,
        app=app,
        pool=pool,
        committer=committer,
        listings=ListingService(committer, settings.listing_rules(), calendar, clock),
        agencies=Agencies(pool, settings.admin_key),
        runners=runners,
    )
