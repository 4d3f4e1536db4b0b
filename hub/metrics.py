"""Prometheus metrics of the hub, in the default registry that `/metrics` serves.

Projections and adapters define theirs beside their code, in the same registry.

On the hottest paths (every check) a Prometheus call costs 0.25 us (a counter) to 0.5 us (a
histogram: a lock per value and a Python loop over the buckets). `Tally` and `Timings`
keep those observations as plain Python numbers instead and add them to their metric child
in bulk: before every collection of the registry (`_flush_all` is registered here, ahead of
every metric, so `/metrics` and `REGISTRY.get_sample_value` see every observation) and
every `FLUSH_EVERY` observations. Names, labels and values exported are the metric's own.
They are meant for the event loop's thread, which is also where `/metrics` collects.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.registry import Collector

__all__ = ["REGISTRY", "Tally", "Timings"]

FLUSH_EVERY = 4096
_pending: list[Tally | Timings] = []


class _Flush(Collector):
    """Adds what tallies hold to their metrics whenever the registry is collected."""

    def collect(self) -> Iterable[Any]:
        for tally in _pending:
            tally.flush()
        return ()

    def describe(self) -> Iterable[Any]:
        return ()


REGISTRY.register(_Flush())  # before any metric: the registry collects in this order


class Tally:
    """Increments of a Counter child, added to it in bulk."""

    __slots__ = ("child", "n")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.n = 0
        _pending.append(self)

    def inc(self, amount: int = 1) -> None:
        self.n += amount
        if self.n >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        n, self.n = self.n, 0
        if n:
            self.child.inc(n)


class Timings:
    """Observations of a Histogram child, added to its buckets and sum in bulk."""

    __slots__ = ("bounds", "child", "values")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = list(child._upper_bounds)  # noqa: SLF001 - the child's buckets
        self.values: list[float] = []
        _pending.append(self)

    def observe(self, amount: float) -> None:
        values = self.values
        values.append(amount)
        if len(values) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        values, self.values = self.values, []
        if not values:
            return
        # Histogram.observe's bucket is the first bound >= the value, so the values up to a
        # bound are those of its bucket and the ones below: sorted once (C), each bucket is
        # a difference of two bisections, not a Python step per value (4,096 of them held
        # the event loop about a millisecond).
        values.sort()
        child = self.child
        child._sum.inc(sum(values))  # noqa: SLF001 - what Histogram.observe adds, in bulk
        below = 0
        for bucket, bound in zip(child._buckets, self.bounds, strict=True):  # noqa: SLF001
            upto = bisect_right(values, bound)
            if upto > below:
                bucket.inc(upto - below)
            below = upto


REQUESTS = Counter(
    "hub_http_requests_total",
    "HTTP requests by route and status.",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "hub_http_request_seconds",
    "HTTP request latency by route.",
    ["method", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
EVENTS_APPENDED = Counter("hub_events_appended_total", "Events appended to the credit log.")
COMMIT_BATCH = Histogram(
    "hub_commit_batch_size",
    "Commands saved per transaction by the group committer.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
