"""The relay's settings and metrics.

`RelayConfig.from_env()` reads the same `HUB_` variables as the hub's settings (the relay can
run as its own process, `python -m adapters.relay`, without importing the hub):
`HUB_DATABASE_URL`, `HUB_DATABASE_SCHEMA`, `HUB_NATS_URL`, `HUB_NATS_STREAM`,
`HUB_NATS_SUBJECT_PREFIX`, `HUB_NATS_REPLICAS`, `HUB_HUB_ID`; and, for the relay process
alone, `HUB_RELAY_BATCH_SIZE` (events per batch, 1000).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from adapters.relay_stream import StreamSpec

POSITION = Gauge("hub_relay_position", "Last log position stored in the stream.", ["stream"])
LAG = Gauge("hub_relay_lag_events", "Log events not yet stored in the stream.", ["stream"])
PUBLISHED = Counter("hub_relay_published_total", "Events stored in the stream.", ["stream"])
ERRORS = Counter("hub_relay_errors_total", "Relay interruptions by kind.", ["stream", "kind"])
LEADER = Gauge("hub_relay_leader", "1 while this process holds the relay's lock.", ["stream"])


@dataclass(frozen=True, slots=True)
class RelayConfig:
    database_url: str
    nats_url: str
    database_schema: str = "public"
    stream: str = "CREDIT"
    subject_prefix: str = "credit"
    replicas: int = 1
    hub_id: str = "320000"
    batch_size: int = 1000
    window: int = 3
    """Batches in flight (published, acks awaited)."""
    ack_timeout: float = 10.0
    poll_seconds: float = 1.0
    max_backoff: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RelayConfig:
        env = os.environ if environ is None else environ

        def get(name: str, default: str) -> str:
            return env.get(f"HUB_{name}") or default

        database_url, nats_url = get("DATABASE_URL", ""), get("NATS_URL", "")
        if not database_url or not nats_url:
            raise ValueError("the relay needs HUB_DATABASE_URL and HUB_NATS_URL")
        return cls(
            database_url=database_url,
            nats_url=nats_url,
            database_schema=get("DATABASE_SCHEMA", "public"),
            stream=get("NATS_STREAM", "CREDIT"),
            subject_prefix=get("NATS_SUBJECT_PREFIX", "credit"),
            replicas=int(get("NATS_REPLICAS", "1")),
            hub_id=get("HUB_ID", "320000"),
            batch_size=int(get("RELAY_BATCH_SIZE", "1000")),
        )

    @property
    def servers(self) -> list[str]:
        return [url.strip() for url in self.nats_url.split(",") if url.strip()]

    @property
    def spec(self) -> StreamSpec:
        return StreamSpec(self.stream, self.subject_prefix, self.replicas)

    @property
    def lock_key(self) -> str:
        return f"relay:{self.database_schema}:{self.stream}"
