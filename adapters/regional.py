"""Regional docking, the worker: reads the inbound stream in order and hands the peers'
events to the hub, which appends what it recognises (`hub.regional`).

One worker per hub reads at a time: the holder of a PostgreSQL advisory lock keyed by schema
and stream. It reads with a durable pull consumer and acks only after its own commit.
Its place is kept in PostgreSQL, table `regional_marks`:

- `stream:<inbound stream>`: the last inbound sequence fully applied. Each pass starts the
  consumer right after it (the consumer is recreated there when its own state says
  otherwise: deleted, reset, or holding unacked messages from a crash), so events are applied
  in order and a message is never skipped because a later one was fetched first.
- `peer:<hub id>`: the last position of that peer's log applied. An event at or below it is
  acked and dropped, so a re-sourced stream or a reset consumer appends nothing twice.

A fetched batch is applied in runs in which no listing appears twice (`segments`); each
run's marks are written after its commit. A crash between the two replays one run, whose
events the hub finds already applied (each listing's state shows its one event).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg
import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge

from adapters.regional_stream import (
    MalformedMessageError,
    Peer,
    RemoteEvent,
    decode,
    ensure_inbound,
    inbound_config,
    segments,
)

log = structlog.get_logger(__name__)
__all__ = ["Apply", "Docking", "DockingConfig", "Peer", "RemoteEvent"]

Apply = Callable[[list[RemoteEvent]], Awaitable[None]]
MARKS_DDL = """
CREATE TABLE IF NOT EXISTS regional_marks (
    name text PRIMARY KEY,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)"""
RECEIVED = Counter(
    "hub_regional_received_total",
    "Inbound messages by outcome (handed to the hub, before_mark, malformed, unknown_peer).",
    ["outcome"],
)
CURSOR = Gauge("hub_regional_cursor", "Last inbound stream sequence applied.", ["stream"])
LEADER = Gauge("hub_regional_leader", "1 while this process runs regional docking.", ["stream"])


@dataclass(frozen=True, slots=True)
class DockingConfig:
    database_url: str
    nats_url: str
    peers: tuple[Peer, ...]
    lists: tuple[str, ...]
    """Lists whose events are sourced from the peers (the lists this hub recognises)."""
    database_schema: str = "public"
    stream: str = "REGIONAL_IN"
    durable: str = "docking"
    batch_size: int = 500
    fetch_timeout: float = 0.5
    consumer_check_seconds: float = 2.0
    max_backoff: float = 5.0

    @property
    def servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def lock_key(self) -> int:
        return zlib.crc32(f"regional:{self.database_schema}:{self.stream}".encode())


def _stream_mark(stream: str) -> str:
    return f"stream:{stream}"


@dataclass
class Docking:
    config: DockingConfig
    pool: asyncpg.Pool
    apply: Apply
    cursor: int = 0
    positions: dict[str, int] = field(default_factory=dict)
    leader: bool = False
    _lock_conn: asyncpg.Connection | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Lead and apply until `stop` is set; outages end a pass, never the loop."""
        backoff = 0.1
        nc: NatsClient | None = None
        try:
            while not stop.is_set():
                try:
                    if not await self._lead(stop):
                        continue
                    if nc is None or nc.is_closed:
                        nc = await self._connect()
                    await self._pass(nc.jetstream(timeout=5), stop)
                    backoff = 0.1
                except Exception as exc:  # any outage: log, back off, start a fresh pass
                    log.warning("regional_retry", stream=self.config.stream, error=repr(exc))
                    backoff = min(backoff * 2, self.config.max_backoff)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
        finally:
            await self._release()
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()

    async def _connect(self) -> NatsClient:
        async def quiet(_: Exception) -> None:
            """Connection errors surface in the pass that meets them."""

        return await nats.connect(
            servers=self.config.servers,
            name=f"credit-hub-regional-{self.config.stream}",
            connect_timeout=2,
            reconnect_time_wait=0.25,
            max_reconnect_attempts=-1,
            error_cb=quiet,
        )

    async def _lead(self, stop: asyncio.Event) -> bool:
        if self.leader and self._lock_conn is not None and not self._lock_conn.is_closed():
            return True
        await self._release()
        conn = await asyncpg.connect(self.config.database_url)
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.config.lock_key):
            self._lock_conn, self.leader = conn, True
            LEADER.labels(self.config.stream).set(1)
            log.info("regional_leader", stream=self.config.stream)
            return True
        await conn.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)
        return False

    async def _release(self) -> None:
        conn, self._lock_conn, self.leader = self._lock_conn, None, False
        LEADER.labels(self.config.stream).set(0)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()  # closing the session releases the advisory lock

    # -- one pass ------------------------------------------------------------------------

    async def _pass(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        config = self.config
        await self._load_marks()
        await ensure_inbound(js, inbound_config(config.stream, config.peers, config.lists))
        sub = await self._subscribe(js)
        checked = time.monotonic()
        while not stop.is_set():
            try:
                msgs = await sub.fetch(config.batch_size, timeout=config.fetch_timeout)
            except (nats.errors.TimeoutError, TimeoutError):
                if time.monotonic() - checked > config.consumer_check_seconds:
                    await js.consumer_info(config.stream, config.durable)  # gone: a new pass
                    await self._check_lock()
                    checked = time.monotonic()
                continue
            await self._process(msgs)

    async def _load_marks(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(MARKS_DDL)
            rows = await conn.fetch("SELECT name, position FROM regional_marks")
        marks = {row["name"]: int(row["position"]) for row in rows}
        self.cursor = marks.get(_stream_mark(self.config.stream), 0)
        self.positions = {
            name.removeprefix("peer:"): value
            for name, value in marks.items()
            if name.startswith("peer:")
        }

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        """Bind the durable consumer, recreated right after the cursor when it stands elsewhere."""
        config = self.config
        stream = await js.stream_info(config.stream)
        if self.cursor > stream.state.last_seq:  # the inbound stream was recreated
            self.cursor = 0
        try:
            info = await js.consumer_info(config.stream, config.durable)
        except nats.js.errors.NotFoundError:
            info = None
        delivered = info.delivered.stream_seq if info and info.delivered else None
        if info is None or info.num_ack_pending or delivered != self.cursor:
            if info is not None:
                await js.delete_consumer(config.stream, config.durable)
            start = self.cursor + 1
            await js.add_consumer(
                config.stream,
                ConsumerConfig(
                    durable_name=config.durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=start,
                    ack_wait=300.0,
                    max_ack_pending=config.batch_size * 2,
                ),
            )
            log.info("regional_consumer_aligned", stream=config.stream, start=start)
        CURSOR.labels(config.stream).set(self.cursor)
        return await js.pull_subscribe_bind(config.durable, stream=config.stream)

    async def _process(self, msgs: Sequence[Msg]) -> None:
        items: list[tuple[Msg, RemoteEvent | None]] = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            if seq <= self.cursor:  # a redelivery of what is applied
                await msg.ack()
                continue
            items.append((msg, self._accept(msg)))
        events = [event for _, event in items if event is not None]
        index = {id(event): i for i, (_, event) in enumerate(items) if event is not None}
        done = 0
        for run in segments(events):
            await self.apply(run)
            upto = index[id(run[-1])] + 1
            await self._advance(items[done:upto])
            done = upto
        if done < len(items):  # only skipped messages after the last run
            await self._advance(items[done:])

    def _accept(self, msg: Msg) -> RemoteEvent | None:
        """The message's event when it is for the hub to apply; None to skip it."""
        try:
            event = decode(msg)
        except MalformedMessageError as exc:
            RECEIVED.labels("malformed").inc()
            log.warning("regional_malformed", seq=msg.metadata.sequence.stream, error=str(exc))
            return None
        if event.peer not in {peer.hub_id for peer in self.config.peers}:
            RECEIVED.labels("unknown_peer").inc()
            return None
        if event.position <= self.positions.get(event.peer, 0):
            RECEIVED.labels("before_mark").inc()
            return None
        RECEIVED.labels("handed").inc()
        return event

    async def _advance(self, items: Sequence[tuple[Msg, RemoteEvent | None]]) -> None:
        """Record the place after `items` (already applied), then ack them."""
        if not items:
            return
        positions = dict(self.positions)
        for _, event in items:
            if event is not None:
                positions[event.peer] = max(positions.get(event.peer, 0), event.position)
        cursor = items[-1][0].metadata.sequence.stream
        names = [_stream_mark(self.config.stream), *(f"peer:{p}" for p in positions)]
        values = [cursor, *positions.values()]
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO regional_marks (name, position) "
                "SELECT * FROM unnest($1::text[], $2::bigint[]) ON CONFLICT (name) "
                "DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
                names,
                values,
            )
        self.cursor, self.positions = cursor, positions
        CURSOR.labels(self.config.stream).set(cursor)
        for msg, _ in items:
            await msg.ack()

    async def _check_lock(self) -> None:
        if self._lock_conn is None or self._lock_conn.is_closed():
            raise RuntimeError("the regional lock's connection is gone")
        try:
            await self._lock_conn.fetchval("SELECT 1", timeout=5)
        except Exception:
            await self._release()
            raise
