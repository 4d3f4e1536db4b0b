"""Rules for listings that an operator may change without code: publication periods per
severity and the catalogue of key domains.

Defaults follow State Council 2025 No. 22 and NDRC Order No. 36 (in force 2026-04-01):
minor at most 3 months (may go unpublished), general 3 to 12 months, severe 12 to 36 months.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime

DEFAULT_DOMAINS: tuple[str, ...] = (
    "taxation",
    "environment",
    "market_regulation",
    "food_drug",
    "construction",
    "transport",
    "human_resources",
    "finance",
    "courts",
    "customs",
)


def add_months(moment: datetime, months: int) -> datetime:
    """The same wall-clock time `months` later, clamped to the month's last day."""
    total = moment.month - 1 + months
    year, month = moment.year + total // 12, total % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


@dataclass(frozen=True)
class Period:
    """Minimum and maximum publication, in months."""

    min_months: int
    max_months: int


def parse_periods(text: str) -> dict[str, Period]:
    """Parse `minor=0-3,general=3-12,severe=12-36,redlist=0-36`."""
    periods: dict[str, Period] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, _, span = item.partition("=")
        low, _, high = span.partition("-")
        try:
            periods[name.strip()] = Period(int(low), int(high))
        except ValueError:
            raise ValueError(f"publication period {item!r} is not NAME=MIN-MAX in months") from None
    return periods


@dataclass(frozen=True)
class ListingRules:
    periods: dict[str, Period] = field(
        default_factory=lambda: parse_periods("minor=0-3,general=3-12,severe=12-36,redlist=0-36")
    )
    domains: frozenset[str] = frozenset(DEFAULT_DOMAINS)
    notice_days: int = 0
    objection_answer_days: int = 10

    def period_for(self, list_name: str, severity: str | None) -> Period | None:
        if list_name == "redlist":
            return self.periods.get("redlist")
        return self.periods.get(severity or "")

    def latest_end(self, list_name: str, severity: str | None, start: datetime) -> datetime | None:
        """The latest `effective_until` the rules allow, None when unbounded."""
        period = self.period_for(list_name, severity)
        return None if period is None else add_months(start, period.max_months)

    def earliest_repair(self, severity: str | None, start: datetime) -> datetime:
        period = self.periods.get(severity or "")
        return start if period is None else add_months(start, period.min_months)
