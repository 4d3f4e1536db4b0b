"""Tallied observations export exactly what direct Prometheus calls would, at every scrape."""

from __future__ import annotations

import random

from prometheus_client import Counter, Histogram, generate_latest

from hub.metrics import FLUSH_EVERY, REGISTRY, Tally, Timings


def test_tallies_equal_direct_observations() -> None:
    buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025)
    direct = Histogram("t_direct_seconds", "d", ["k"], buckets=buckets, registry=None)
    bulk = Histogram("t_bulk_seconds", "b", ["k"], buckets=buckets, registry=None)
    times = Timings(bulk.labels("x"))
    rng = random.Random(2)
    values = [rng.choice((0.0005, 0.001, 0.03)) or 0.0 for _ in range(50)]
    values += [rng.expovariate(400) for _ in range(FLUSH_EVERY + 10)]
    for value in values:
        direct.labels("x").observe(value)
        times.observe(value)
    times.flush()

    def samples(h: Histogram, name: str) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name.replace(name, "t"), s.labels, round(s.value, 9))
            for metric in h.collect()
            for s in metric.samples
            if not s.name.endswith("_created")
        ]

    assert samples(direct, "t_direct_seconds") == samples(bulk, "t_bulk_seconds")


def test_a_scrape_sees_every_tally() -> None:
    counter = Counter("t_scraped_total", "c", ["k"])  # in the default registry, as the hub's
    tally = Tally(counter.labels("y"))
    for _ in range(7):
        tally.inc()
    tally.inc(3)
    assert REGISTRY.get_sample_value("t_scraped_total", {"k": "y"}) == 10
    assert 't_scraped_total{k="y"} 10.0' in generate_latest(REGISTRY).decode()
