"""The check index: compact records, in-force semantics, and memory per listing."""

from __future__ import annotations

import gc
import random
import tracemalloc
import uuid
from datetime import UTC, datetime

from projections.checkindex import (
    EFFECTIVE,
    NO_END,
    NOTICED,
    OBJECTED,
    CheckIndex,
    end_seconds,
    flags,
    start_seconds,
    subject_key,
    unpack,
)
from schemas.identifiers import make_cnid, make_uscc

T0 = 1_740_000_000


def record(
    index,
    listing_id,
    *,
    start=T0,
    end=T0 + 1000,
    notice=0,
    status=EFFECTIVE,
    pending=0,
    list_name="blacklist",
    severity="severe",
    intent="intentional",
):
    return index.pack(
        listing_id,
        start=start,
        end=end,
        notice=notice,
        domain="taxation",
        region="320100",
        flags=flags(list_name, severity, intent, status),
        pending=pending,
    )


def test_records_add_find_replace_remove():
    index = CheckIndex()
    key = subject_key("uscc:91350100M000100Y43")
    a, b = uuid.uuid4().bytes, uuid.uuid4().bytes
    index.add(key, record(index, a))
    index.add(key, record(index, b, list_name="redlist", severity=None, intent=None))
    assert index.listings == 2
    assert [e.listing_id for e in unpack(index.get(key))] == [a, b]
    index.add(key, record(index, a, end=T0 + 5))  # the same listing again replaces it
    assert index.listings == 2
    assert index.find(key, a).end == T0 + 5
    assert index.remove(key, a)
    assert not index.remove(key, a)
    assert [e.listing_id for e in unpack(index.get(key))] == [b]
    assert index.remove(key, b)
    assert index.get(key) is None
    assert index.listings == 0


def test_subject_keys_tell_kinds_and_codes_apart():
    rng = random.Random(7)
    ids = {f"uscc:{make_uscc(rng)}" for _ in range(2000)} | {
        f"cnid:{make_cnid(rng)}" for _ in range(2000)
    }
    assert len({subject_key(i) for i in ids}) == len(ids)
    assert subject_key("uscc:110101199003070011") != subject_key("cnid:110101199003070011")


def test_in_force_follows_the_read_models_rule():
    index = CheckIndex()
    entry = next(unpack(record(index, b"x" * 16)))
    assert not entry.in_force(T0 - 1)
    assert entry.in_force(T0)
    assert entry.in_force(T0 + 999)
    assert not entry.in_force(T0 + 1000)  # effective_until: no longer in force
    noticed = next(unpack(record(index, b"x" * 16, status=NOTICED, notice=T0 + 10)))
    assert not noticed.in_force(T0 + 9)
    assert noticed.in_force(T0 + 10)  # the window ended with nothing pending
    pending = next(unpack(record(index, b"x" * 16, status=NOTICED, notice=T0 + 10, pending=1)))
    assert not pending.in_force(T0 + 20)
    objected = next(unpack(record(index, b"x" * 16, status=OBJECTED, notice=T0 + 10, pending=1)))
    assert not objected.in_force(T0 + 20)
    permanent = next(unpack(record(index, b"x" * 16, end=NO_END)))
    assert permanent.in_force(2**32 - 2)


def test_times_round_towards_the_shorter_period():
    moment = datetime(2025, 3, 3, 2, 0, 0, 500_000, tzinfo=UTC)
    whole = int(moment.timestamp())
    assert start_seconds(moment) == whole + 1
    assert end_seconds(moment) == whole
    assert end_seconds(None) == NO_END


def test_memory_per_listing_is_at_most_200_bytes():
    rng = random.Random(11)
    n = 100_000
    subjects = [f"uscc:{make_uscc(rng)}" for _ in range(n)]
    ids = [rng.randbytes(16) for _ in range(n)]
    regions = [f"32{rng.randrange(10_000):04d}" for _ in range(200)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        index = CheckIndex()
        for i in range(n):
            key = subject_key(subjects[i])
            index.add(
                key,
                index.pack(
                    ids[i],
                    start=T0,
                    end=T0 + 86_400 * 365,
                    notice=0,
                    domain="taxation",
                    region=regions[i % len(regions)],
                    flags=flags("blacklist", "severe", "intentional", EFFECTIVE),
                ),
            )
        gc.collect()
        per_listing = (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()
    assert index.listings == n
    assert per_listing <= 200, per_listing
