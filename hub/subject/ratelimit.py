"""A small in-process token bucket per client, for the keyless public endpoints.

Each process limits on its own (N API processes allow N times the rate): enough to stop a
single scraper or a flood of reports without a shared store. Buckets are kept for the most
recent `max_clients` clients only. Time is the monotonic clock: rates are operational, not
legal, so they do not follow the hub's settable clock.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from hub.errors import TooManyRequests


class TokenBucket:
    def __init__(
        self,
        capacity: int,
        per_seconds: float,
        *,
        max_clients: int = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = max(1, capacity)
        self.rate = self.capacity / per_seconds
        self.max_clients = max_clients
        self.monotonic = monotonic
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Take one token; returns 0 when allowed, else the seconds until one is free."""
        now = self.monotonic()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.capacity), now))
            tokens = min(float(self.capacity), tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait

    def check(self, client: str, what: str) -> None:
        """Raise `TooManyRequests` (429 with Retry-After) when `client` has no token left."""
        wait = self.take(client)
        if wait > 0:
            raise TooManyRequests(
                f"too many {what} from this client; try again later",
                rule="public.rate_limit",
                retry_after=max(1, math.ceil(wait)),
            )
