"""The composition root: pools, the credit application, the committer, services and
projections, built in one place and started and stopped together.

Nothing here runs at import time. `build_hub()` is what `create_app()`'s lifespan and the CLI
call; tests call it with a `SettableClock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from eventsourcing.utils import get_topic
from psycopg.conninfo import conninfo_to_dict

from adapters.regional import Docking
from adapters.relay import Relay, RelayConfig
from adapters.webhooks import WebhookConfig, WebhookWorker
from hub.agencies import DDL as AGENCIES_DDL
from hub.agencies import Agencies
from hub.audit import AuditLog
from hub.checks.service import CheckService, build_checks
from hub.clock import Clock, SystemClock
from hub.credit.appender import Appender
from hub.credit.appender import function_ddl as appender_ddl
from hub.credit.application import EVENTS_TABLE, CreditApplication
from hub.credit.committer import Committer
from hub.credit.domainmodel import Listing
from hub.credit.service import ListingService
from hub.errors import RuleViolation, Unavailable
from hub.regional import docking
from hub.scheduler import Scheduler
from hub.settings import Settings
from hub.subject import SubjectSide, build_subject_side
from hub.webhooks import SubscriptionService
from hub.workdays import WorkingCalendar
from projections import Projection, ProjectionRunner, max_position
from projections.audit import AuditProjection
from projections.history import HistoryProjection
from projections.listings import ListingsProjection
from projections.subject import SubjectProjection

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
    appender: Appender
    agencies: Agencies
    runners: dict[str, ProjectionRunner]
    scheduler: Scheduler | None = None
    relay: Relay | None = None
    audit: AuditLog | None = None
    subject: SubjectSide | None = None
    checks: CheckService | None = None
    webhooks: WebhookWorker | None = None
    subscriptions: SubscriptionService | None = None
    regional: Docking | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _listener: asyncpg.Connection | None = None

    def wake_projections(self, *_: object) -> None:
        for runner in self.runners.values():
            runner.wakeup.set()
        if self.checks is not None:
            self.checks.wake()
        if self.webhooks is not None:
            self.webhooks.wake()

    async def start(self) -> None:
        await self.committer.start()
        self.committer.on_commit = self.wake_projections
        await self.appender.start()
        self.appender.on_commit = self.wake_projections
        if self.settings.run_projections:
            self._listener = await asyncpg.connect(
                self.settings.database_url,
                server_settings={"search_path": self.settings.database_schema},
            )
            await self._listener.add_listener(EVENTS_TABLE, self.wake_projections)
            for runner in self.runners.values():
                self._tasks.append(asyncio.create_task(runner.run(self._stop)))
        if self.settings.run_scheduler and self.scheduler is not None:
            self._tasks.append(asyncio.create_task(self.scheduler.run(self._stop)))
        if self.relay is not None:
            self._tasks.append(asyncio.create_task(self.relay.run(self._stop)))
        if self.settings.run_projections and self.audit is not None:
            self._tasks.append(asyncio.create_task(self.audit.heads.run(self._stop)))
        if self.checks is not None:
            listen = self.settings.database_url if self._listener is None else None
            self._tasks.extend(await self.checks.start(self._stop, listen_url=listen))
        if self.settings.run_webhooks and self.webhooks is not None:
            self._tasks.append(asyncio.create_task(self.webhooks.run(self._stop)))
        if self.regional is not None:
            self._tasks.append(asyncio.create_task(self.regional.run(self._stop)))

    async def require_position(
        self, position: int, within: float, names: tuple[str, ...] | None = None
    ) -> None:
        """Read-your-writes: wait for the read models, then 503 if they are still behind, or
        422 if `position` lies beyond the end of the log (it will never be reached)."""
        if await self.wait_for_projections(position, within, names):
            return
        async with self.pool.acquire() as conn:
            head = await max_position(conn)
        if position > head:
            raise RuleViolation(
                f"min_position {position} lies beyond the end of the log ({head})",
                field="min_position",
                rule="min_position.beyond_log",
            )
        raise Unavailable("the read models have not reached min_position yet", retry_after=1)

    async def wait_for_projections(
        self, position: int, within: float, names: tuple[str, ...] | None = None
    ) -> bool:
        """Wait until the named projections (default: all) applied `position`; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        runners = [r for n, r in self.runners.items() if names is None or n in names]
        while any(r.position < position for r in runners):
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
        await close_projections(runner.projection for runner in self.runners.values())
        await self.appender.stop()
        await self.committer.stop()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.audit is not None:
            await self.audit.close()
        await self.pool.close()
        await asyncio.to_thread(self.app.close)


async def close_projections(projections: Iterable[Projection]) -> None:
    """End what projections run beside them (the audit projection's hash worker)."""
    for projection in projections:
        close = getattr(projection, "close", None)
        if close is not None:
            await close()


def projections(settings: Settings | None = None) -> dict[str, Projection]:
    """The read models kept in PostgreSQL, by name (what `hub replay` and `hub project` run).

    With `settings`, the audit projection hashes in `HUB_MERKLE_HASH_WORKERS` processes (the
    hub closes them on stop); without, in-process."""
    workers = 0 if settings is None else settings.merkle_hash_workers
    return {
        "listings": ListingsProjection(),
        "audit": AuditProjection(hash_workers=workers),
        "history": HistoryProjection(),
        "subject": SubjectProjection(),
    }


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
        await conn.execute(appender_ddl(schema, EVENTS_TABLE))
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
    appender = Appender(
        settings.database_url,
        schema,
        get_topic(Listing.Registered),
        max_batch=settings.commit_batch_max,
    )
    runners = {
        name: ProjectionRunner(pool, p, batch_size=getattr(p, "batch_size", 2000))
        for name, p in projections(settings).items()
    }
    for runner in runners.values():
        await runner.setup()
    subject = build_subject_side(
        settings=settings,
        app=app,
        pool=pool,
        committer=committer,
        listing_rules=settings.listing_rules(),
        calendar=calendar,
        clock=clock,
    )
    runners[subject.policy.name] = ProjectionRunner(pool, subject.policy)
    await runners[subject.policy.name].setup()
    await subject.setup(pool)
    scheduler = Scheduler(pool, committer, clock)
    for job in subject.jobs:
        scheduler.add_job(job)
    await scheduler.setup()
    audit = await AuditLog.create(pool, settings, clock, runners)
    webhooks = await webhook_worker(settings, pool, clock)
    return Hub(
        settings=settings,
        clock=clock,
        calendar=calendar,
        app=app,
        pool=pool,
        committer=committer,
        listings=ListingService(committer, settings.listing_rules(), calendar, clock, appender),
        appender=appender,
        agencies=Agencies(pool, settings.admin_key),
        runners=runners,
        scheduler=scheduler,
        relay=relay(settings),
        audit=audit,
        subject=subject,
        checks=build_checks(
            app=app,
            committer=committer,
            pool=pool,
            clock=clock,
            settings=settings,
        )
        if settings.run_checks
        else None,  # the check routes answer 503 "not served by this process"
        webhooks=webhooks,
        subscriptions=SubscriptionService(pool, clock, webhooks),
        regional=docking(settings, pool, committer),
    )


async def webhook_worker(settings: Settings, pool: asyncpg.Pool, clock: Clock) -> WebhookWorker:
    """The webhook tables and worker (it runs only where `HUB_RUN_WEBHOOKS` is true)."""
    config = WebhookConfig(
        database_schema=settings.database_schema,
        hub_id=settings.hub_id,
        max_attempts=settings.webhook_max_attempts,
    )
    worker = WebhookWorker(pool, config, clock.now)
    await worker.setup()
    return worker


def relay(settings: Settings) -> Relay | None:
    """The JetStream relay, when a NATS URL is set (`hub up` sets the embedded one)."""
    if not settings.nats_url or not settings.database_url:
        return None
    return Relay(
        RelayConfig(
            database_url=settings.database_url,
            nats_url=settings.nats_url,
            database_schema=settings.database_schema,
            stream=settings.nats_stream,
            subject_prefix=settings.nats_subject_prefix,
            replicas=settings.nats_replicas,
            hub_id=settings.hub_id,
        )
    )
