"""The webhook worker: the credit log, fanned out to subscriptions, POSTed with retries.

One pass (`run_once()`, which tests call directly) does two things:

1. Fan-out. In one transaction: lock the cursor, read the events after it (with their
   listing context, `adapters.relay_log.LogReader`), insert one delivery per matching
   subscription (COPY) and move the cursor. A crash anywhere leaves both or neither.
2. Delivery. Claim due deliveries (a lease, `webhooks_queue.claim_due`), POST them
   concurrently (bounded) with Standard Webhooks signatures, and record each outcome: 2xx is
   delivered and frees the next delivery of that subject; anything else is retried after
   exponential backoff with jitter, or dead after `max_attempts`. Repeat while any are due.

Due times follow the hub's clock (`now`), so tests step a SettableClock through the retry
schedule; `webhook-timestamp` is wall time, because receivers compare it with theirs.

`run()` is the background loop: the process holding an advisory lock (keyed by schema) leads,
woken by commits (`wake()`) or every `poll_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
import httpx
import structlog

from adapters import cloudevents as ce
from adapters import webhooks_queue as queue
from adapters import webhooks_store as store
from adapters.relay_log import LogReader
from adapters.webhooks_config import (
    DELIVERIES,
    LEADER,
    OLDEST,
    POSITION,
    QUEUE,
    PassResult,
    WebhookConfig,
)
from adapters.webhooks_signing import headers as signed_headers
from adapters.webhooks_signing import secret_key

log = structlog.get_logger(__name__)
__all__ = ["PassResult", "WebhookConfig", "WebhookWorker"]


@dataclass(frozen=True, slots=True)
class _Outcome:
    due: queue.Due
    status: int | None
    error: str | None = field(default=None)


class WebhookWorker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        config: WebhookConfig,
        now: Callable[[], datetime],
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.config = config
        self.now = now
        self.wall = wall
        self.source = ce.hub_source(config.hub_id)
        self.position = 0
        self.leader = False
        self.wakeup = asyncio.Event()
        self._reader = LogReader(pool)
        self._client: httpx.AsyncClient | None = None
        self._pass_lock = asyncio.Lock()
        self._keys: dict[str, bytes] = {}

    async def setup(self) -> None:
        async with self.pool.acquire() as conn:
            await store.setup(conn, self.config.database_schema)
            self.position = await store.lock_cursor(conn, share=True)

    def wake(self) -> None:
        self.wakeup.set()

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- one pass --------------------------------------------------------------------------

    async def run_once(self, *, max_rounds: int = 100) -> PassResult:
        """Fan out the new events, then deliver until nothing is due; each for at most
        `max_rounds` batches (a backlog takes several passes)."""
        result = PassResult()
        async with self._pass_lock:
            for _ in range(max_rounds):
                if not (batch := await self._fan_out(result)):
                    break
                result.events += batch
            for _ in range(max_rounds):
                if not await self._deliver_round(result):
                    break
        return result

    async def _fan_out(self, result: PassResult) -> int:
        """One batch of events into deliveries; returns how many events it consumed."""
        now = self.now()
        async with self.pool.acquire() as conn, conn.transaction():
            cursor = await store.lock_cursor(conn)
            subscriptions = await store.all_subscriptions(conn)
            if not subscriptions:  # nobody listens: skip ahead (creation waits on our lock)
                self._set_position(max(cursor, await store.head(conn)))
                if self.position > cursor:
                    await store.set_cursor(conn, self.position)
                return 0
            events = await self._reader.read(cursor, self.config.fan_out_batch)
            if not events:
                self._set_position(cursor)
                return 0
            new: list[store.NewDelivery] = []
            for event, context in events:
                region = context.region if context else event.data.get("region")
                matching = [
                    s.id
                    for s in subscriptions
                    if event.position > s.created_position
                    and s.matches(event.type, context.list if context else None, region)
                ]
                if matching:
                    cloud = ce.to_cloudevent(event, self.source, context)
                    subject, body = cloud.subject or event.aggregate_id, ce.encode(cloud)
                    new.extend(
                        store.NewDelivery(s, event.id, event.position, event.type, subject, body)
                        for s in matching
                    )
            result.queued += await store.insert_deliveries(conn, new, now)
            last = events[-1][0].position
            await store.set_cursor(conn, last)
        self._set_position(last)
        return len(events)

    async def _deliver_round(self, result: PassResult) -> int:
        now = self.now()
        lease = now + timedelta(seconds=self.config.timeout * 2 + 5)
        async with self.pool.acquire() as conn:
            claimed = await queue.claim_due(conn, now, lease, self.config.delivery_batch)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(self.config.concurrency)
        outcomes = await asyncio.gather(*(self._send(due, gate) for due in claimed))
        now = self.now()
        done: list[tuple[queue.Due, int]] = []
        failed: list[queue.Failure] = []
        for outcome in outcomes:
            if outcome.error is None and outcome.status is not None:
                done.append((outcome.due, outcome.status))
            else:
                failed.append(self._failure(outcome, now))
        async with self.pool.acquire() as conn, conn.transaction():
            await queue.mark_delivered(conn, done, now)
            await queue.mark_failed(conn, failed, now)
        DELIVERIES.labels("delivered").inc(len(done))
        result.delivered += len(done)
        result.dead += sum(1 for f in failed if f.retry_at is None)
        result.retried += sum(1 for f in failed if f.retry_at is not None)
        return len(claimed)

    async def _send(self, due: queue.Due, gate: asyncio.Semaphore) -> _Outcome:
        """One attempt; any error is a failed attempt, never an exception."""
        async with gate:
            try:
                key = self._keys.get(due.secret)
                if key is None:
                    key = self._keys[due.secret] = secret_key(due.secret)
                hdrs = signed_headers(key, due.event_id, int(self.wall()), due.body)
                hdrs["content-type"] = ce.CONTENT_TYPE
                hdrs["user-agent"] = "credit-hub-webhooks/1"
                async with self.client.stream("POST", due.url, content=due.body, headers=hdrs) as r:
                    status = r.status_code
            except Exception as exc:  # timeouts, refusals, bad URLs: all count as failures
                return _Outcome(due, None, f"{type(exc).__name__}: {exc}"[:500])
        return _Outcome(due, status, None if 200 <= status < 300 else f"HTTP {status}")  # noqa: PLR2004

    def _failure(self, outcome: _Outcome, now: datetime) -> queue.Failure:
        due = outcome.due
        attempts = due.attempts + 1
        if attempts >= self.config.max_attempts:
            DELIVERIES.labels("dead").inc()
            log.warning("webhook_dead", delivery=due.id, url=due.url, error=outcome.error)
            retry_at = None
        else:
            DELIVERIES.labels("retry").inc()
            retry_at = now + timedelta(seconds=self.config.delay(attempts))
        return queue.Failure(due, outcome.status, outcome.error or "", retry_at)

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.config.timeout, connect=min(5.0, self.config.timeout)),
                limits=httpx.Limits(max_connections=self.config.concurrency * 2),
                follow_redirects=False,
            )
        return self._client

    # -- metrics ---------------------------------------------------------------------------

    async def stats(self) -> dict[str, int]:
        """Undelivered deliveries by status; also sets the queue gauges."""
        async with self.pool.acquire() as conn:
            counts, oldest = await queue.queue_stats(conn)
        for status in ("pending", "held", "dead"):
            QUEUE.labels(status).set(counts.get(status, 0))
        age = (self.now() - oldest).total_seconds() if oldest is not None else 0.0
        OLDEST.set(max(0.0, age))
        return counts

    async def prune(self, limit: int = 10_000) -> int:
        """Forget deliveries delivered more than `keep_delivered` ago (a batch at a time)."""
        async with self.pool.acquire() as conn:
            return await queue.prune_delivered(conn, self.now() - self.config.keep_delivered, limit)

    def _set_position(self, position: int) -> None:
        self.position = position
        POSITION.set(position)

    # -- the background loop ---------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Lead (advisory lock) and run passes until `stop`; outages are logged, not raised."""
        key = store.lock_key(self.config.database_schema, "worker")
        try:
            async with self.pool.acquire() as lock_conn:
                while not stop.is_set():
                    if await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.config.poll_seconds * 10)
                if stop.is_set():
                    return
                LEADER.set(1)
                self.leader = True
                try:
                    await self._follow(stop)
                finally:
                    LEADER.set(0)
                    self.leader = False
                    await lock_conn.execute("SELECT pg_advisory_unlock($1)", key)
        finally:
            await self.close()

    async def _follow(self, stop: asyncio.Event) -> None:
        last_stats = 0.0
        while not stop.is_set():
            self.wakeup.clear()
            busy = False
            try:
                result = await self.run_once(max_rounds=20)
                busy = result.events + result.delivered + result.retried + result.dead > 0
                if time.monotonic() - last_stats > 5 * self.config.poll_seconds:
                    last_stats = time.monotonic()
                    await self.stats()
                    await self.prune()
            except Exception as exc:
                log.warning("webhook_pass_failed", error=repr(exc))
            if busy:
                continue
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self.wakeup.wait()),
            ]
            await asyncio.wait(
                waiters, timeout=self.config.poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in waiters:
                waiter.cancel()
