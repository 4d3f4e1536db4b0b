"""The relay's JetStream side: the stream's configuration and the relay's place in it.

The stream is the relay's only record of how far it got: every message carries the log
position of its event in the header `Hub-Position`, so on (re)start the relay reads the last
message and continues after it. Messages also carry `Nats-Msg-Id` (the event id: JetStream
drops a repeat within its duplicate window) and `Nats-Expected-Last-Sequence`: a message is
stored only if the stream's last sequence is the one the relay expects, so a message lost in
flight (a dropped connection, a leader change) makes every later one fail instead of
leaving a hole, and the relay starts again from what the stream holds. Each event therefore
lands at exactly one sequence, in log order, even if two relays ever ran at once.

`Publisher` sends runs of messages and gathers their acks. Every message asks for its own
ack (a JetStream publish, as `publish_async` makes it) on one reply subscription per pass,
the reply subject naming the sequence the message must land at; an ack counts only if the
stream stored the message at exactly that sequence. A run is done when every message of it
is acked, and failed at its first refusal. Unlike `publish_async` it keeps no future, random
token or dict entry per message: the relay waits for runs, not messages, and that
per-message bookkeeping cost as much as reading and encoding the event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from adapters.cloudevents import CONTENT_TYPE
from adapters.relay_wire import Outgoing

POSITION_HEADER = "Hub-Position"
MSG_ID_HEADER = "Nats-Msg-Id"
EXPECTED_SEQ_HEADER = "Nats-Expected-Last-Sequence"
WRONG_LAST_SEQUENCE = 10071  # JetStream API error code
WALK_BACK = 1000  # messages without our header we step over when recovering


class RelayStreamError(RuntimeError):
    """The stream holds something the relay cannot continue from, or refused a message."""


class PublishRefusedError(RelayStreamError):
    """JetStream did not store a message where the relay expected it (or at all)."""


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subject_prefix: str
    replicas: int = 1

    @property
    def subjects(self) -> list[str]:
        return [f"{self.subject_prefix}.>"]

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description="The credit hub's log as CloudEvents, in log order, each event once.",
            subjects=self.subjects,
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            num_replicas=self.replicas,
            duplicate_window=120.0,
            allow_direct=True,
        )


@dataclass(frozen=True, slots=True)
class Place:
    """Where the relay stands: the last log position and stream sequence it has stored."""

    position: int
    sequence: int


async def ensure_stream(js: JetStreamContext, spec: StreamSpec) -> None:
    """Create the stream when missing; an existing one is kept as it is."""
    try:
        await js.stream_info(spec.name)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(spec.config())
        except nats.js.errors.BadRequestError:  # created meanwhile by another relay
            await js.stream_info(spec.name)


async def recover(js: JetStreamContext, spec: StreamSpec) -> Place:
    """Read the relay's place from the stream's last message that carries `Hub-Position`.

    An empty stream (new, or purged by an operator) means position 0: the whole log is
    published again after the stream's last sequence.
    """
    info = await js.stream_info(spec.name)
    last = info.state.last_seq
    if info.state.messages == 0:
        return Place(0, last)
    first = max(info.state.first_seq, last - WALK_BACK)
    for seq in range(last, first - 1, -1):
        try:
            msg = await js.get_msg(spec.name, seq=seq)
        except nats.js.errors.NotFoundError:
            continue  # deleted or expired
        value = (msg.headers or {}).get(POSITION_HEADER)
        if value is not None:
            return Place(int(value), last)
    raise RelayStreamError(
        f"no message with {POSITION_HEADER} among the last {WALK_BACK} of stream {spec.name}"
    )


def is_wrong_sequence(exc: BaseException) -> bool:
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == WRONG_LAST_SEQUENCE


class _ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class _PubAck(msgspec.Struct):
    """JetStream's answer to a publish: where it stored the message, or why it did not."""

    seq: int = 0
    error: _ApiError | None = None


_ack_decoder = msgspec.json.Decoder(_PubAck)


class Run:
    """One run of messages for consecutive stream sequences and the acks gathered for it."""

    __slots__ = ("done", "first_seq", "last_position", "remaining", "seen")

    def __init__(self, first_seq: int, count: int, last_position: int) -> None:
        self.first_seq = first_seq
        self.last_position = last_position
        self.remaining = count
        self.seen = bytearray(count)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_exception(PublishRefusedError(reason))


class Publisher:
    """Publishes runs of messages to JetStream on one connection, acks gathered per run."""

    def __init__(self, nc: NatsClient) -> None:
        self._nc = nc
        self._prefix = ""
        self._sub: Subscription | None = None
        self._runs: deque[Run] = deque()

    async def open(self) -> None:
        self._prefix = f"{self._nc.new_inbox()}."
        self._sub = await self._nc.subscribe(f"{self._prefix}*", cb=self._on_reply)

    async def close(self) -> None:
        """Stop listening for acks; runs still open are abandoned (the pass starts over)."""
        for run in self._runs:
            if not run.done.done():
                run.done.cancel()
            elif not run.done.cancelled():
                run.done.exception()  # retrieved: a refusal after the pass ended is moot
        self._runs.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def publish(self, messages: Sequence[Outgoing], last_seq: int) -> Run:
        """Send `messages` to land right after stream sequence `last_seq`, in order."""
        run = Run(last_seq + 1, len(messages), messages[-1].position)
        self._runs.append(run)
        publish, prefix = self._nc.publish, self._prefix
        seq = last_seq
        for out in messages:
            headers = {
                MSG_ID_HEADER: out.id,
                POSITION_HEADER: str(out.position),
                EXPECTED_SEQ_HEADER: str(seq),
                "Content-Type": CONTENT_TYPE,
            }
            seq += 1
            await publish(out.subject, out.payload, reply=f"{prefix}{seq}", headers=headers)
        return run

    def settled(self, run: Run) -> None:
        """`run` is done with (acked, or the pass ends): its late replies are ignored."""
        with contextlib.suppress(ValueError):
            self._runs.remove(run)

    async def _on_reply(self, msg: Msg) -> None:
        try:
            seq = int(msg.subject[len(self._prefix) :])
        except ValueError:
            return
        for run in self._runs:
            index = seq - run.first_seq
            if 0 <= index < len(run.seen):
                break
        else:
            return  # a late reply to a run already settled or abandoned
        if run.seen[index] or run.done.done():
            return
        run.seen[index] = 1
        if msg.headers and msg.headers.get("Status"):
            run.fail(f"no stream answered the publish ({msg.headers.get('Status')})")
            return
        try:
            ack = _ack_decoder.decode(msg.data)
        except msgspec.DecodeError:
            run.fail(f"an unreadable publish ack: {msg.data[:200]!r}")
            return
        if ack.error is not None:
            error = ack.error
            run.fail(f"publish refused: {error.description} ({error.code}/{error.err_code})")
        elif ack.seq != seq:
            run.fail("the stream holds another message at an expected place")
        else:
            run.remaining -= 1
            if run.remaining == 0:
                run.done.set_result(None)
