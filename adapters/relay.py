"""The JetStream relay: every credit-log event, in log order, into one stream, exactly once.

The log in PostgreSQL is the source of truth; the relay follows it and publishes each event
as a CloudEvent (`adapters.cloudevents`) on its subject. It pipelines: batches of events go
out (`adapters.relay_stream.Publisher`, each message acked by JetStream) while the next batch
is read, and the relay's position advances only over acknowledged messages. How the stream
keeps order and exactly-once across crashes and outages is in `adapters.relay_stream`. Any
failure (NATS down, a lost ack, a leader change) ends the pass; the relay backs off,
reconnects and recovers its place from the stream. It never touches the API's write path,
so a NATS outage never blocks a listing.

One relay per stream publishes at a time: the holder of a PostgreSQL advisory lock. The
others wait, and keep their `position` fresh from the stream for `GET /v1/info`. The same
connection LISTENs for the log's NOTIFY, so new events go out within milliseconds.

Run it alone with `python -m adapters.relay` (settings from `HUB_` variables, see
`adapters.relay_config`); the hub runs it as a background task when `HUB_NATS_URL` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import zlib
from collections import deque
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import nats
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient

from adapters import cloudevents as ce
from adapters.relay_config import ERRORS, LAG, LEADER, POSITION, PUBLISHED, RelayConfig
from adapters.relay_log import EVENTS_TABLE, LogReader
from adapters.relay_stream import Publisher, Run, ensure_stream, recover
from adapters.relay_wire import Outgoing

log = structlog.get_logger(__name__)
__all__ = ["Relay", "RelayConfig", "main"]
T = TypeVar("T")


class RelayInterrupted(RuntimeError):
    """A pass ended early (an ack failed or timed out, the lock was lost); it starts again."""


async def _quiet(_: Exception) -> None:
    """nats-py reports connection errors here; the relay's own loop logs what matters."""


async def _until(stop: asyncio.Event, coro: Coroutine[Any, Any, T]) -> T | None:
    """`coro`'s result, or None when `stop` is set first (then `coro` is cancelled)."""
    task = asyncio.ensure_future(coro)
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


class Relay:
    def __init__(self, config: RelayConfig, pool: asyncpg.Pool | None = None) -> None:
        self.config = config
        self.spec = config.spec
        self.source = ce.hub_source(config.hub_id)
        self.position = 0
        self.leader = False
        self.wakeup = asyncio.Event()
        self._pool = pool
        self._reader: LogReader | None = None
        self._lock_conn: asyncpg.Connection | None = None
        self._last_check = 0.0

    # -- the loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Hold the lock and publish until `stop` is set; never raises for outages."""
        own_pool = self._pool is None
        nc: NatsClient | None = None
        backoff = 0.1
        try:
            while not stop.is_set():
                started = self.position
                try:
                    if self._pool is None:
                        self._pool = await self._connect_pool()
                    self._reader = self._reader or LogReader(self._pool)
                    if nc is None or nc.is_closed:
                        nc = await _until(stop, self._connect_nats())
                        if nc is None:
                            return
                    if not await self._lead(stop, nc):
                        continue
                    await self._pump(nc, stop)
                except Exception as exc:  # any outage: count, log, back off, start again
                    ERRORS.labels(self.spec.name, type(exc).__name__).inc()
                    log.warning("relay_retry", stream=self.spec.name, error=repr(exc))
                    backoff = 0.1 if self.position > started else min(backoff * 2, 5.0)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
        finally:
            await self._release()
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
            if own_pool and self._pool is not None:
                await self._pool.close()

    async def _connect_pool(self) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self.config.database_url,
            min_size=1,
            max_size=2,
            server_settings={"search_path": self.config.database_schema},
        )

    async def _connect_nats(self) -> NatsClient:
        return await nats.connect(
            servers=self.config.servers,
            name=f"credit-hub-relay-{self.spec.name}",
            connect_timeout=2,
            reconnect_time_wait=0.25,
            max_reconnect_attempts=-1,
            error_cb=_quiet,
        )

    async def _lead(self, stop: asyncio.Event, nc: NatsClient) -> bool:
        """True once this process holds the lock; meanwhile follow the stream's position."""
        if self.leader and self._lock_conn is not None and not self._lock_conn.is_closed():
            return True
        await self._release()
        conn = await asyncpg.connect(self.config.database_url)
        key = zlib.crc32(self.config.lock_key.encode())
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            await conn.add_listener(EVENTS_TABLE, self._notified)
            self._lock_conn, self.leader = conn, True
            LEADER.labels(self.spec.name).set(1)
            log.info("relay_leader", stream=self.spec.name)
            return True
        await conn.close()
        with contextlib.suppress(Exception):
            self._set_position((await recover(nc.jetstream(), self.spec)).position)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self.config.poll_seconds * 5)
        return False

    async def _release(self) -> None:
        conn, self._lock_conn, self.leader = self._lock_conn, None, False
        LEADER.labels(self.spec.name).set(0)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()  # closing the session releases the advisory lock

    def _notified(self, *_: Any) -> None:
        self.wakeup.set()

    # -- one pass ------------------------------------------------------------------------

    async def _pump(self, nc: NatsClient, stop: asyncio.Event) -> None:
        """Publish from the stream's place on, until `stop`; raise to start over."""
        assert self._reader is not None  # noqa: S101 - set by run()
        js = nc.jetstream(timeout=self.config.ack_timeout)
        await ensure_stream(js, self.spec)
        place = await recover(js, self.spec)
        self._set_position(place.position)
        seq, read_pos = place.sequence, place.position
        publisher = Publisher(nc)
        await publisher.open()
        inflight: deque[Run] = deque()
        ahead = self._read_ahead(read_pos)
        try:
            while True:
                events = await ahead
                if not events or stop.is_set():
                    await self._settle_all(publisher, inflight)
                    if stop.is_set():
                        return
                    await self._idle(stop)
                    ahead = self._read_ahead(read_pos)
                    continue
                read_pos = events[-1].position
                ahead = self._read_ahead(read_pos)  # the next batch is read while this goes out
                inflight.append(await publisher.publish(events, seq))
                seq += len(events)
                while len(inflight) >= self.config.window:
                    await self._settle(publisher, inflight.popleft())
                await self._check_lock()
        finally:
            ahead.cancel()
            await publisher.close()

    def _read_ahead(self, after: int) -> asyncio.Task[list[Outgoing]]:
        assert self._reader is not None  # noqa: S101
        self.wakeup.clear()
        return asyncio.create_task(
            self._reader.read_outgoing(
                after, self.config.batch_size, prefix=self.spec.subject_prefix, source=self.source
            )
        )

    async def _settle(self, publisher: Publisher, run: Run) -> None:
        """Wait for a run's acks; only then does the position advance."""
        if not run.done.done():
            await asyncio.wait([run.done], timeout=self.config.ack_timeout)
            if not run.done.done():
                raise RelayInterrupted(f"{run.remaining} acks did not come within the timeout")
        run.done.result()  # raises the first refusal
        publisher.settled(run)
        PUBLISHED.labels(self.spec.name).inc(len(run.seen))
        self._set_position(run.last_position)

    async def _settle_all(self, publisher: Publisher, inflight: deque[Run]) -> None:
        while inflight:
            await self._settle(publisher, inflight.popleft())

    async def _idle(self, stop: asyncio.Event) -> None:
        await self._check_lock(force=True)
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.wakeup.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=self.config.poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _check_lock(self, *, force: bool = False) -> None:
        """At most once a second: the lock's session must be alive, and the lag measured."""
        now = time.monotonic()
        if not force and now - self._last_check < 1.0:
            return
        self._last_check = now
        if self._lock_conn is None or self._lock_conn.is_closed():
            raise RelayInterrupted("the relay lock's connection is gone")
        try:
            await self._lock_conn.fetchval("SELECT 1", timeout=5)
        except Exception as exc:
            await self._release()
            raise RelayInterrupted("the relay lock's connection is gone") from exc
        assert self._reader is not None  # noqa: S101
        LAG.labels(self.spec.name).set(max(0, await self._reader.head() - self.position))

    def _set_position(self, position: int) -> None:
        self.position = position
        POSITION.labels(self.spec.name).set(position)


async def _main(config: RelayConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Relay(config).run(stop)


def main() -> None:
    """`python -m adapters.relay`: run the relay alone until SIGTERM (it drains first)."""
    asyncio.run(_main(RelayConfig.from_env()))


if __name__ == "__main__":
    main()
