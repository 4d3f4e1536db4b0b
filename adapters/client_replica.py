"""`LocalReplica`: an agency's own copy of the active lists, fed by a durable JetStream consumer.

The consumer is named for the agency (`replica-<agency>`), pulls every event of the hub's
stream in order and acknowledges only what the replica has saved: the state (listings, the
last stream sequence and log position applied) goes to one JSON file, written atomically
(temporary file, fsync, rename) at most every `save_seconds` and whenever the replica has
caught up; then the last applied message is acknowledged (`AckPolicy.ALL` covers all before
it). After a crash the consumer redelivers what was not acknowledged and the replica skips
what its file already holds. If the consumer has acknowledged more than the file holds (the
file was lost or restored from an older copy) it is recreated from the file's sequence.

Staleness: `current_at` is the last time the replica saw nothing pending in the stream; a
listing recorded after that instant (plus the relay's lag, normally milliseconds) may be
missing from its answers. NATS being down does not stop the replica from answering.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from adapters import cloudevents as ce
from adapters.client_state import Replica, ReplicaListing, ReplicaState

Now = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def _quiet(_: Exception) -> None:
    """Connection errors are expected while the hub's NATS is away; the loop retries."""


class LocalReplica:
    def __init__(
        self,
        nats_url: str,
        stream: str,
        agency: str,
        path: Path | str,
        *,
        subject_prefix: str = "credit",
        save_seconds: float = 2.0,
        now: Now = _utcnow,
    ) -> None:
        self.servers = [url.strip() for url in nats_url.split(",") if url.strip()]
        self.stream, self.durable = stream, f"replica-{ce.token(agency)}"
        self.path = Path(path)
        self.subject_prefix = subject_prefix
        self.save_seconds = save_seconds
        self.now = now
        self.replica = Replica(self._load())
        self._saved_seq = self.replica.state.stream_seq
        self._nc: NatsClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    # -- answering -----------------------------------------------------------------------

    def in_force(self, subject_id: str, now: datetime | None = None) -> list[ReplicaListing]:
        return self.replica.in_force(subject_id, now or self.now())

    @property
    def position(self) -> int:
        return self.replica.state.position

    @property
    def current_at(self) -> datetime | None:
        """The last instant the replica knew it held every event of the stream."""
        return self.replica.state.current_at

    # -- following -----------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the stream in the background; returns at once (NATS may be down)."""
        self._stop.clear()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 10)
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def wait_for(self, position: int, within: float) -> bool:
        """Wait until the replica has applied log position `position`; False on timeout."""
        deadline = time.monotonic() + within
        while self.position < position:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if self._nc is None or self._nc.is_closed:
                    self._nc = await nats.connect(
                        servers=self.servers,
                        connect_timeout=2,
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=0.25,
                        error_cb=_quiet,
                    )
                await self._follow(self._nc.jetstream(timeout=5))
            except Exception:  # NATS away or the stream missing: keep answering, retry
                backoff = min(backoff * 2, 5.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
            else:
                backoff = 0.1

    async def _follow(self, js: JetStreamContext) -> None:
        await self._ensure_consumer(js)
        sub = await js.pull_subscribe_bind(self.durable, self.stream)
        last: Msg | None = None
        saved_at = time.monotonic()
        while not self._stop.is_set():
            asked = self.now()
            try:
                msgs = await sub.fetch(1000, timeout=1.0)
            except (nats.errors.TimeoutError, TimeoutError):
                msgs = []
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                self.replica.apply(seq, ce.decode(msg.data), self.now())
                last = msg
            if msgs:
                pending = msgs[-1].metadata.num_pending
            else:  # ask the server: a quiet fetch may also mean an unreachable stream
                pending = (await sub.consumer_info()).num_pending or 0
            if pending == 0:
                self.replica.state.current_at = asked
            if last is not None and (
                pending == 0 or time.monotonic() - saved_at > self.save_seconds
            ):
                await asyncio.to_thread(self._save)
                await last.ack()
                last, saved_at = None, time.monotonic()

    async def _ensure_consumer(self, js: JetStreamContext) -> None:
        applied = self.replica.state.stream_seq
        try:
            info = await js.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            info = None
        floor = info.ack_floor.stream_seq or 0 if info and info.ack_floor else 0
        if info is not None and floor > applied:  # the file is behind the consumer: start over
            await js.delete_consumer(self.stream, self.durable)
            info = None
        if info is None:
            await js.add_consumer(
                self.stream,
                ConsumerConfig(
                    durable_name=self.durable,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE
                    if applied
                    else DeliverPolicy.ALL,
                    opt_start_seq=applied + 1 if applied else None,
                    ack_policy=AckPolicy.ALL,
                    ack_wait=60.0,
                    max_ack_pending=100_000,
                    filter_subject=f"{self.subject_prefix}.>",
                ),
            )

    # -- the file ------------------------------------------------------------------------

    def _load(self) -> ReplicaState:
        try:
            return msgspec.json.decode(self.path.read_bytes(), type=ReplicaState)
        except FileNotFoundError:
            return ReplicaState()

    def _save(self) -> None:
        data = msgspec.json.encode(self.replica.state)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(self.path)
        self._saved_seq = self.replica.state.stream_seq
