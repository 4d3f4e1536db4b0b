"""Signed tree heads on NATS: each checkpoint the hub signs goes to a JetStream stream of its
own, so that auditors and peers can follow the log's heads without a key.

Stream `<HUB_NATS_STREAM>_TREE_HEADS` holds subject `<prefix>-audit.tree_head` (outside the
relay's `<prefix>.>`, whose sequence the relay guards). Each message is JSON
`{origin, tree_size, root_hash, checkpoint}` with `Nats-Msg-Id: tree-head-<origin>-<size>`, so a
repeat is dropped by the server. Publishing is best effort and never holds up signing: the
heads live in PostgreSQL, and a head that could not be published is sent with the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
import structlog
from nats.js.api import StorageType, StreamConfig

log = structlog.get_logger(__name__)


class HeadMessage(msgspec.Struct):
    origin: str
    tree_size: int
    root_hash: str
    checkpoint: str


@dataclass(frozen=True)
class HeadsConfig:
    nats_url: str
    stream: str
    subject_prefix: str
    replicas: int = 1

    @property
    def subject(self) -> str:
        return f"{self.subject_prefix}-audit.tree_head"

    @property
    def stream_name(self) -> str:
        return f"{self.stream}_TREE_HEADS"


class TreeHeadPublisher:
    def __init__(self, config: HeadsConfig, *, timeout: float = 2.0) -> None:
        self.config = config
        self.timeout = timeout
        self._nc: Any = None
        self._js: Any = None
        self._pending: list[HeadMessage] = []
        self._lock = asyncio.Lock()

    async def _connect(self) -> Any:
        if self._js is None:
            self._nc = await nats.connect(
                self.config.nats_url.split(","),
                connect_timeout=self.timeout,
                max_reconnect_attempts=1,
            )
            self._js = self._nc.jetstream(timeout=self.timeout)
            config = StreamConfig(
                name=self.config.stream_name,
                subjects=[self.config.subject],
                storage=StorageType.FILE,
                num_replicas=self.config.replicas,
            )
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError:
                await self._js.stream_info(self.config.stream_name)  # exists with other settings
        return self._js

    async def publish(self, head: HeadMessage) -> bool:
        """Send this head and any earlier one that failed; False when NATS is unreachable."""
        async with self._lock:
            self._pending.append(head)
            try:
                js = await self._connect()
                while self._pending:
                    item = self._pending[0]
                    await js.publish(
                        self.config.subject,
                        msgspec.json.encode(item),
                        headers={"Nats-Msg-Id": f"tree-head-{item.origin}-{item.tree_size}"},
                    )
                    self._pending.pop(0)
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                log.warning("tree_head_publish_failed", error=str(exc), pending=len(self._pending))
                await self._reset()
                del self._pending[:-100]  # keep the latest few; the database has them all
                return False
            return True

    async def _reset(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def close(self) -> None:
        await self._reset()
