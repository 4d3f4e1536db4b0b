"""The webhook worker's settings, its metrics, and what one pass did.

The hub builds `WebhookConfig` from its settings (`HUB_WEBHOOK_MAX_ATTEMPTS`, the schema, the
hub id); the retry schedule's other numbers are defaults here (docs/WEBHOOKS.md).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client import Counter, Gauge

DELIVERIES = Counter(
    "hub_webhook_deliveries_total",
    "Webhook delivery attempts by outcome (delivered, retry, dead).",
    ["outcome"],
)
QUEUE = Gauge("hub_webhook_queue_depth", "Undelivered webhook deliveries by status.", ["status"])
OLDEST = Gauge(
    "hub_webhook_oldest_pending_seconds", "Age of the oldest pending or held webhook delivery."
)
POSITION = Gauge("hub_webhook_position", "Last log position fanned out to webhook deliveries.")
LEADER = Gauge("hub_webhook_leader", "1 while this process runs the webhook deliveries.")


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    database_schema: str = "public"
    hub_id: str = "320000"
    max_attempts: int = 8
    base_delay: float = 30.0
    """Seconds before the second attempt; each further wait is `factor` times longer."""
    factor: float = 4.0
    max_delay: float = 6 * 3600.0
    jitter: float = 0.2
    """Each wait is stretched by a random 0 to `jitter` of itself."""
    timeout: float = 10.0
    concurrency: int = 16
    fan_out_batch: int = 1000
    delivery_batch: int = 200
    poll_seconds: float = 0.5
    keep_delivered: timedelta = timedelta(days=7)
    """Delivered rows are forgotten after this long (the log keeps every event)."""

    def delay(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        base = min(self.max_delay, self.base_delay * self.factor ** max(0, attempts - 1))
        return base * (1 + self.jitter * rand())


@dataclass(slots=True)
class PassResult:
    events: int = 0
    queued: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
