"""Prometheus metrics of the hub, in the default registry that `/metrics` serves.

Projections and adapters define theirs beside their code, in the same registry."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Histogram

__all__ = ["REGISTRY"]

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
