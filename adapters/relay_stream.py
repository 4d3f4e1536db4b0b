"""The relay's JetStream side: the stream's configuration and the relay's place in it.

The stream is the relay's only record of how far it got: every message carries the log
position of its event in the header `Hub-Position`, so on (re)start the relay reads the last
message and continues after it. Messages also carry `Nats-Msg-Id` (the event id: JetStream
drops a repeat within its duplicate window) and `Nats-Expected-Last-Sequence`: a message is
stored only if the stream's last sequence is the one the relay expects, so a message lost in
flight (a dropped connection, a leader change) makes every later one fail instead of
leaving a hole, and the relay starts again from what the stream holds. Each event therefore
lands at exactly one sequence, in log order, even if two relays ever ran at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

POSITION_HEADER = "Hub-Position"
MSG_ID_HEADER = "Nats-Msg-Id"
EXPECTED_SEQ_HEADER = "Nats-Expected-Last-Sequence"
WRONG_LAST_SEQUENCE = 10071  # JetStream API error code
WALK_BACK = 1000  # messages without our header we step over when recovering


class RelayStreamError(RuntimeError):
    """The stream holds something the relay cannot continue from."""


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
