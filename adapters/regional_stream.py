"""Regional docking, the JetStream side: peers, the inbound stream that sources them, and
the remote events read from it.

Each peer hub runs its own NATS server in its own JetStream domain; a leafnode joins the
servers. The inbound stream (`REGIONAL_IN` by default) has no subjects of its own: its
`sources` are the peers' relay streams, reached through `$JS.<domain>.API`, each filtered
to the lists this hub recognises and re-subjected by a subject transform::

    <peer prefix>.<list>.>  ->  regional.<peer hub id>.<list>.>

so every stored message says which peer it came from. JetStream does the copying: it keeps
its own place in each source across restarts and outages, and stores each message once
(`Nats-Msg-Id`, the event id, deduplicates within the window).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    ExternalStream,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamSource,
    SubjectTransform,
)

from adapters import cloudevents as ce
from adapters.relay_stream import POSITION_HEADER

SUBJECT_ROOT = "regional"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class PeerConfigError(ValueError):
    """`HUB_REGIONAL_PEERS` does not parse."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A hub this hub docks with: its id, JetStream domain, relay stream and subject prefix."""

    hub_id: str
    domain: str
    stream: str = "CREDIT"
    prefix: str = "credit"

    @property
    def api(self) -> str:
        return f"$JS.{self.domain}.API"

    def source(self, lists: Sequence[str]) -> StreamSource:
        transforms = [
            SubjectTransform(
                src=f"{self.prefix}.{name}.>", dest=f"{SUBJECT_ROOT}.{self.hub_id}.{name}.>"
            )
            for name in sorted(set(lists))
        ]
        return StreamSource(
            name=self.stream,
            external=ExternalStream(api=self.api),
            subject_transforms=transforms,
        )


def parse_peers(text: str, *, stream: str, prefix: str) -> tuple[Peer, ...]:
    """`310000=js310000[/STREAM[/PREFIX]],...`; stream and prefix default to this hub's own."""
    peers: list[Peer] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        hub_id, sep, rest = item.partition("=")
        parts = rest.split("/")
        if not sep or len(parts) > 3 or not all(parts):  # noqa: PLR2004 - domain/stream/prefix
            raise PeerConfigError(f"peer {item!r} is not HUB_ID=DOMAIN[/STREAM[/PREFIX]]")
        peer = Peer(
            hub_id.strip(),
            parts[0],
            parts[1] if len(parts) > 1 else stream,
            parts[2] if len(parts) > 2 else prefix,  # noqa: PLR2004
        )
        for value in (peer.hub_id, peer.domain, peer.stream, peer.prefix):
            if not value or not set(value) <= _NAME_CHARS:
                raise PeerConfigError(f"peer {item!r}: {value!r} is not a NATS name token")
        peers.append(peer)
    if len({p.hub_id for p in peers}) != len(peers):
        raise PeerConfigError(f"a peer hub is named twice in {text!r}")
    return tuple(peers)


def inbound_config(name: str, peers: Sequence[Peer], lists: Sequence[str]) -> StreamConfig:
    return StreamConfig(
        name=name,
        description="Listings of peer hubs, sourced from their relay streams (regional docking).",
        sources=[peer.source(lists) for peer in peers],
        storage=StorageType.FILE,
        retention=RetentionPolicy.LIMITS,
        duplicate_window=120.0,
    )


def _source_key(source: StreamSource) -> tuple[Any, ...]:
    external = source.external.api if source.external else None
    transforms = tuple((t.src, t.dest) for t in source.subject_transforms or ())
    return (source.name, external, transforms)


async def ensure_inbound(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the inbound stream, or update its sources when the peers or lists changed."""
    try:
        info = await js.stream_info(str(config.name))
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError:  # created meanwhile by another process
            await js.stream_info(str(config.name))
        return
    have = sorted(_source_key(s) for s in info.config.sources or ())
    want = sorted(_source_key(s) for s in config.sources or ())
    if have != want:
        await js.update_stream(config)


class RemoteEvent(msgspec.Struct, kw_only=True):
    """One event of a peer's log as the inbound stream delivers it."""

    peer: str
    source: str
    position: int
    id: str
    type: str
    """The short type, `listing.registered`."""
    time: datetime
    aggregate_id: str
    version: int
    data: dict[str, Any]


class MalformedMessageError(ValueError):
    """An inbound message that is not one of a peer's CloudEvents."""


def decode(msg: Msg) -> RemoteEvent:
    """A peer's CloudEvent, with the peer from the subject the source gave it."""
    root, _, rest = msg.subject.partition(".")
    peer = rest.partition(".")[0]
    if root != SUBJECT_ROOT or not peer:
        raise MalformedMessageError(f"subject {msg.subject!r} is not regional.<peer>....")
    try:
        event = ce.decode(msg.data)
    except msgspec.DecodeError as exc:
        raise MalformedMessageError(f"not a CloudEvent: {exc}") from exc
    data = event.data
    header = (msg.headers or {}).get(POSITION_HEADER)
    try:
        position = int(header if header is not None else data["position"])
        return RemoteEvent(
            peer=peer,
            source=event.source,
            position=position,
            id=event.id,
            type=event.type.removeprefix(ce.TYPE_PREFIX),
            time=event.time,
            aggregate_id=str(data["aggregate_id"]),
            version=int(data["version"]),
            data=data,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessageError(f"CloudEvent {event.id} lacks {exc}") from exc


def segments(events: Sequence[RemoteEvent]) -> Iterator[list[RemoteEvent]]:
    """Consecutive runs in which no listing appears twice, in order.

    Each run is committed and marked before the next, so a crash between a commit and its
    mark replays one run, where every listing has one event that its state already shows.
    """
    run: list[RemoteEvent] = []
    seen: set[tuple[str, str]] = set()
    for event in events:
        key = (event.peer, event.aggregate_id)
        if key in seen:
            yield run
            run, seen = [], set()
        run.append(event)
        seen.add(key)
    if run:
        yield run
