"""Working-day deadlines that pass: overdue objection answers, repair decisions and answers,
and report answers; and the scheduler jobs of the subject's side.

`overdue()` answers for one agency (or all) from the read models' partial indexes. Jobs follow
`hub.scheduler.Job`: `OverdueJob` appends nothing, it refreshes the `hub_overdue` gauge and
tells the scheduler when the next deadline falls; `PublicationEndJob` appends
`Listing.PublicationEnded` when a listing's maximum publication period ends.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from prometheus_client import Gauge

from hub.credit.application import UnitOfWork
from hub.credit.committer import Command
from hub.credit.rules import ListingRules, add_months
from projections import Connection
from schemas.subject import OverdueItem, OverdueSummary

OVERDUE = Gauge("hub_overdue", "Answers and decisions past their working-day limit.", ["kind"])

# kind: (table, id column, due column, open condition, agency column)
_KINDS: dict[str, tuple[str, str, str, str, str]] = {
    "objection": (
        "objection_deadlines",
        "listing_id::text || '/' || n",
        "answer_due",
        "NOT resolved",
        "authority",
    ),
    "repair_decision": (
        "repair_cases",
        "repair_id::text",
        "decision_due",
        "status = 'applied'",
        "authority",
    ),
    "repair_answer": (
        "repair_cases",
        "repair_id::text",
        "answer_due",
        "status IN ('applied', 'accepted')",
        "authority",
    ),
    "report": ("public_reports", "report_id::text", "answer_due", "status = 'filed'", "agency"),
}


async def overdue(
    conn: Connection, agency: str | None, now: datetime, *, limit: int = 100
) -> OverdueSummary:
    counts: dict[str, int] = {}
    items: list[OverdueItem] = []
    for kind, (table, ident, due, open_, who) in _KINDS.items():
        where = f"{open_} AND {due} < $1" + (f" AND {who} = $2" if agency else "")
        args: list[Any] = [now, agency] if agency else [now]
        counts[kind] = int(
            await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {where}", *args)
        )
        rows = await conn.fetch(
            f"SELECT {ident} AS id, {due} AS due FROM {table} WHERE {where} "
            f"ORDER BY {due} LIMIT {int(limit)}",
            *args,
        )
        items += [OverdueItem(kind, r["id"], r["due"]) for r in rows]  # type: ignore[arg-type]
    return OverdueSummary(agency or "*", now, counts, items)


class OverdueJob:
    """Refreshes `hub_overdue{kind}`; wakes the scheduler when the next deadline passes."""

    name = "subject_overdue"

    async def setup(self, conn: Connection) -> None:
        """The read model's partial indexes serve the queries."""

    async def due(
        self,
        conn: Connection,
        now: datetime,
        after: tuple[datetime, UUID] | None,
        limit: int,  # noqa: ARG002 - the Job protocol's signature
    ) -> list[tuple[datetime, UUID]]:
        if after is None:
            summary = await overdue(conn, None, now, limit=0)
            for kind, count in summary.counts.items():
                OVERDUE.labels(kind).set(count)
        return []

    async def next_due(self, conn: Connection, now: datetime) -> datetime | None:
        upcoming = []
        for table, _, due, open_, _ in _KINDS.values():
            value = await conn.fetchval(
                f"SELECT min({due}) FROM {table} WHERE {open_} AND {due} >= $1", now
            )
            if value is not None:
                upcoming.append(value + timedelta(microseconds=1))
        return min(upcoming, default=None)

    def command(self, aggregate_id: UUID) -> Command:
        raise NotImplementedError(f"{self.name} appends nothing ({aggregate_id})")


class PublicationEndJob:
    """`PublicationEnded` for each listing whose maximum publication period has ended."""

    name = "listing_publication_end"
    SLACK = "interval '4 days'"  # month arithmetic differs at month ends; the command decides

    def __init__(self, rules: ListingRules) -> None:
        self.rules = rules
        self.groups = {g: p.max_months for g, p in rules.periods.items()}

    async def setup(self, conn: Connection) -> None:
        """`listing_publication_due` (the subject projection's) serves the queries."""

    async def due(
        self, conn: Connection, now: datetime, after: tuple[datetime, UUID] | None, limit: int
    ) -> list[tuple[datetime, UUID]]:
        since, last = after or (datetime.min.replace(tzinfo=now.tzinfo), UUID(int=0))
        found: list[tuple[datetime, UUID]] = []
        for group, months in self.groups.items():
            rows = await conn.fetch(
                "SELECT effective_from, listing_id FROM listing_publication "
                "WHERE pub_group = $1 AND NOT delisted AND ended_at IS NULL "
                "AND effective_from <= "
                f"$2::timestamptz - make_interval(months => $3::int) + {self.SLACK} "
                "AND effective_from + make_interval(months => $3) <= $2 "
                "AND (effective_from, listing_id) > ($4, $5) "
                "ORDER BY effective_from, listing_id LIMIT $6",
                group,
                now,
                months,
                since,
                last,
                limit,
            )
            found += [(r[0], r[1]) for r in rows]
        return sorted(found)[:limit]

    async def next_due(self, conn: Connection, now: datetime) -> datetime | None:
        upcoming = []
        for group, months in self.groups.items():
            value = await conn.fetchval(
                "SELECT min(effective_from) FROM listing_publication "
                "WHERE pub_group = $1 AND NOT delisted AND ended_at IS NULL "
                "AND effective_from > "
                f"$2::timestamptz - make_interval(months => $3::int) - {self.SLACK} "
                "AND effective_from + make_interval(months => $3) > $2",
                group,
                now,
                months,
            )
            if value is not None:
                upcoming.append(add_months(value, months))
        return min(upcoming, default=None)

    def command(self, aggregate_id: UUID) -> Command:
        def end(uow: UnitOfWork) -> bool:
            listing = uow.get_listing(aggregate_id)
            if listing is None:
                return False
            period = self.rules.period_for(listing.list, listing.severity)
            if period is None:
                return False
            ends = add_months(listing.effective_from, period.max_months)
            return listing.end_publication(ended_at=ends, now=uow.now)

        return end
