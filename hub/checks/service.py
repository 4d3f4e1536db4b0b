"""Checks: answer from the in-memory index, record durably in the usage log, then reply.

`CheckService` composes the check index and its follower, the decision logic, the catalogue
and the usage log. A check's `position` is the log position its index state reflects and
its `catalogue_version` the catalogue it used; both are taken at the instant of the
decision, before the record is written. A single check's record is encoded right there and
joins the usage log's open group, which gives it its id (`hub.checks.usage`); a batch's id is
a time-ordered UUID (version 7 layout) and its items are `<batch id>:<index>`.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
from collections import Counter
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram

from hub.checks.catalogue import CatalogueService
from hub.checks.decide import Decider
from hub.checks.subjects import canonical_subject_key, canonical_subjects
from hub.checks.usage import UsageLog
from hub.clock import Clock
from hub.credit.service import Agency
from hub.errors import RuleViolation, Unavailable
from hub.metrics import Tally, Timings
from hub.settings import Settings
from projections import max_position
from projections.checkindex import CheckIndex
from projections.checkindex_follower import IndexFollower
from schemas.checks import (
    DECISIONS,
    BatchAnswer,
    BatchRequest,
    CheckAnswer,
    CheckRequest,
    CheckResult,
    Hit,
)

CHECK_SECONDS = Histogram(
    "hub_check_seconds",
    "Time to answer a check (or a batch), from validation to the durable record.",
    ["kind"],
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.5, 1, 2),
)
DECISION_COUNT = PromCounter(
    "hub_check_decisions_total", "Check answers by decision.", ["decision"]
)
# counted and timed as plain numbers, added to the metrics before each scrape (hub.metrics)
_DECIDED = {d: Tally(DECISION_COUNT.labels(d)) for d in DECISIONS}
_SINGLE_SECONDS = Timings(CHECK_SECONDS.labels("single"))
_BATCH_SECONDS = Timings(CHECK_SECONDS.labels("batch"))
MIN_POSITION_WAIT = 1.0
GC_THRESHOLDS = (50_000, 20, 100)
"""The collector's thresholds once the hub has started (Python's defaults: 700, 10, 10).
Under load checks keep a few container objects each (coroutine, task, future, dicts) alive
across passes, so at the defaults the collector ran ~150 young passes, ~13 middle ones and a
full one (1-2 ms, every request in flight waiting) per second at 64 concurrent checks, ~2% of
the process's CPU; at 50,000 it ran none in 4-second windows of the same load (objects are
freed by their reference counts; the collector only finds cycles). Memory stays bounded: a
pass still comes once 50,000 more objects were made than freed."""

_hits_encoder = msgspec.msgpack.Encoder()
_record_encoder = _hits_encoder
"""A single check's record in its group: `hub.checks.records.GroupedRecord`, as msgpack."""


_random = random.Random(os.urandom(32))


def new_check_id(now_ms: int) -> UUID:
    """A UUID with the version 7 layout: 48 bits of milliseconds, then random bits.

    Check ids are unique, not secret: reading a check's record needs its agency's key."""
    value = now_ms << 80 | _random.getrandbits(80)
    value = value & ~(0xF << 76) | 0x7 << 76
    value = value & ~(0x3 << 62) | 0x2 << 62
    return UUID(int=value)


def _hit_counts(counts: Counter[tuple[str, str]], agency: str, hits: list[Hit]) -> None:
    for hit in hits:
        counts["hits.by_list", hit.list] += 1
        counts["hits.by_region", hit.region] += 1
        counts["hits.by_agency", agency] += 1
        for measure in hit.measures:
            counts["measures.returned", measure.code] += 1


def _hit_keys(keys: list[tuple[str, str]], agency: str, hits: list[Hit]) -> None:
    """`_hit_counts` as counter keys, each counting one."""
    for hit in hits:
        keys.append(("hits.by_list", hit.list))
        keys.append(("hits.by_region", hit.region))
        keys.append(("hits.by_agency", agency))
        keys.extend(("measures.returned", measure.code) for measure in hit.measures)


class CheckService:
    def __init__(
        self,
        *,
        clock: Clock,
        catalogue: CatalogueService,
        follower: IndexFollower,
        usage: UsageLog,
    ) -> None:
        self.clock = clock
        self.catalogue = catalogue
        self.follower = follower
        self.index: CheckIndex = follower.index
        self.usage = usage
        self.decider = Decider(follower.catalogue, follower.index)
        self.matters = catalogue.matters

    async def start(
        self, stop: asyncio.Event, *, listen_url: str | None = None
    ) -> list[asyncio.Task[Any]]:
        """Seed the catalogue, load the index and catch up, then follow; returns the tasks.

        `listen_url`: a database to LISTEN on for new events, when nothing else wakes us."""
        await self.usage.setup()
        await self.catalogue.seed()
        await self.follower.load()
        await self.follower.catch_up()
        # The loaded index and everything imported so far live as long as the process: keep
        # them out of the collector's scans, so full collections under load stay short (with
        # ~100k long-lived objects each one otherwise stalls every request for 50-200 ms).
        # Unfreeze first, so what an earlier start froze (tests start many hubs) and is garbage
        # by now is still collected. Then the collector runs less often (`GC_THRESHOLDS`).
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        return [
            asyncio.create_task(self.follower.run(stop, listen_url=listen_url), name="check-index"),
            asyncio.create_task(self.usage.run(stop), name="usage-log"),
        ]

    def wake(self) -> None:
        self.follower.wakeup.set()

    async def _reach(self, min_position: int | None) -> None:
        if (
            min_position is not None
            and self.follower.position < min_position
            and not await self.follower.wait_for(min_position, MIN_POSITION_WAIT)
        ):
            async with self.follower.pool.acquire() as conn:
                head = await max_position(conn)
            if min_position > head:
                raise RuleViolation(
                    f"min_position {min_position} lies beyond the end of the log ({head})",
                    field="min_position",
                    rule="min_position.beyond_log",
                )
            raise Unavailable(
                f"the check index has not reached position {min_position} yet "
                f"(it is at {self.follower.position})",
                retry_after=1,
            )

    async def check(self, agency: Agency, request: CheckRequest) -> CheckAnswer:
        started = time.perf_counter()
        subject, key = canonical_subject_key(request.subject_id)
        category = self.matters.require(request.matter)
        if request.min_position is not None:
            await self._reach(request.min_position)
        answer, committed = self._decide(agency, request, subject, key, category)
        await committed
        self.answered(answer.decision, started)
        return answer

    def enter(
        self, agency: Agency, request: CheckRequest
    ) -> tuple[CheckAnswer, asyncio.Future[None]]:
        """`check` without its waits, for a request without `min_position` (the HTTP fast
        path): the answer and the future of its record's commit. The answer may be given only
        once the future is done (it raises what `check` would); then call `answered`."""
        if request.min_position is not None:
            raise ValueError("a check with min_position waits: use check()")
        subject, key = canonical_subject_key(request.subject_id)
        category = self.matters.require(request.matter)
        return self._decide(agency, request, subject, key, category)

    @staticmethod
    def answered(decision: str, started: float) -> None:
        """Count a committed check's decision and time it from `started` (perf_counter)."""
        _DECIDED[decision].inc()
        _SINGLE_SECONDS.observe(time.perf_counter() - started)

    def _decide(
        self, agency: Agency, request: CheckRequest, subject: str, key: int, category: str
    ) -> tuple[CheckAnswer, asyncio.Future[None]]:
        """Decide now (`key`: the subject's index key), and put the record in the usage log's
        open group."""
        now = self.clock.now()
        packed = self.index.get(key)
        hits: list[Hit]
        if packed is None:  # most subjects: not listed (what decide answers for None)
            decision, hits = "clear", []
        else:
            decision, hits = self.decider.decide(
                packed, request.matter, category, int(now.timestamp())
            )
        follower = self.follower
        position, version = follower.position, follower.catalogue.version
        code = agency.code
        keys = [
            ("checks.by_agency", code),
            ("checks.by_decision", decision),
            ("checks.by_matter", category),
        ]
        if hits:
            _hit_keys(keys, code, hits)
        record = _record_encoder.encode(
            (code, now, position, version, subject, request.matter, request.purpose, decision, hits)
        )
        check_id, committed = self.usage.add(record, keys)
        answer = CheckAnswer(
            check_id=check_id,
            decision=decision,  # type: ignore[arg-type]
            hits=hits,
            position=position,
            catalogue_version=version,
            tree_size=follower.tree_size,
            checked_at=now,
        )
        return answer, committed

    async def batch(self, agency: Agency, request: BatchRequest) -> BatchAnswer:
        started = time.perf_counter()
        items = request.items
        by_matter = self.matters.by_matter
        matters = [item.matter for item in items]
        categories = [by_matter.get(matter) for matter in matters]
        # the first error in item order, the subject before the matter within an item
        bad = categories.index(None) if None in categories else len(items)
        subjects, keys = canonical_subjects(
            [item.subject_id for item in items[: bad + 1]], prefix="items"
        )
        if bad < len(items):
            self.matters.require(matters[bad], field=f"items.{bad}.matter")
        await self._reach(request.min_position)
        now = self.clock.now()
        now_s = int(now.timestamp())
        position, version = self.follower.position, self.follower.catalogue.version
        tree_size = self.follower.tree_size
        batch_id = str(new_check_id(int(now.timestamp() * 1000)))
        prefix = batch_id + ":"
        code = agency.code
        get, decide = self.index.subjects.get, self.decider.decide
        results: list[CheckResult] = []
        stored: list[tuple[str, str, str, str, list[Hit]]] = []
        add_result, add_stored = results.append, stored.append
        counts: Counter[tuple[str, str]] = Counter()
        decided: list[str] = []
        add_decided = decided.append
        for i, key in enumerate(keys):
            packed = get(key)
            hits: list[Hit]
            if packed is None:  # most subjects: not listed
                decision, hits = "clear", []
            else:
                decision, hits = decide(packed, matters[i], categories[i], now_s)  # type: ignore[arg-type]
                _hit_counts(counts, code, hits)
            add_decided(decision)
            add_result(CheckResult(check_id=f"{prefix}{i}", decision=decision, hits=hits))  # type: ignore[arg-type]
            add_stored((subjects[i], matters[i], items[i].purpose, decision, hits))
        counts["checks.by_agency", code] += len(keys)
        for decision, n in Counter(decided).items():
            counts["checks.by_decision", decision] += n
            _DECIDED[decision].inc(n)
        for category, n in Counter(categories).items():
            counts["checks.by_matter", category] += n  # type: ignore[index]
        row = (
            UUID(batch_id),
            code,
            now,
            position,
            version,
            len(stored),
            None,
            None,
            None,
            None,
            _hits_encoder.encode(stored),
        )
        await self.usage.record(row, counts.items())
        _BATCH_SECONDS.observe(time.perf_counter() - started)
        return BatchAnswer(
            batch_id=batch_id,
            results=results,
            position=position,
            catalogue_version=version,
            tree_size=tree_size,
            checked_at=now,
        )


def build_checks(
    *,
    app: Any,
    committer: Any,
    pool: asyncpg.Pool,
    clock: Clock,
    settings: Settings,
) -> CheckService:
    """The check service with its catalogue, index, follower and usage log."""

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(
            settings.database_url, server_settings={"search_path": settings.database_schema}
        )

    return CheckService(
        clock=clock,
        catalogue=CatalogueService(app, committer, settings.listing_rules().domains),
        follower=IndexFollower(pool, CheckIndex()),
        usage=UsageLog(pool, connect=connect),
    )
