"""Working days by the official Chinese calendar, for statutory time limits.

Objection answers and credit-repair decisions are due within N working days (工作日): the
official public holidays are off and the make-up days (调休) are working days, as published
each year by the State Council and packaged by `chinese_calendar`. For a year the package does
not know yet (or any more), Monday to Friday are working days; `is_official` tells the caller
that such a deadline is provisional. Nothing here raises for an unknown year.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Final

import chinese_calendar

from hub.clock import CHINA_TZ, local_date

__all__ = ["WorkingCalendar"]

_ONE_DAY: Final = timedelta(days=1)
_LAST_WEEKDAY: Final = 4  # Friday
_END_OF_DAY: Final = time(23, 59, 59, 999_999)


@lru_cache(maxsize=16_384)
def _official_workday(day: date) -> bool | None:
    """The official answer for `day`, or None when the package has no data for its year."""
    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None


class WorkingCalendar:
    """Chinese working days, with a Monday-Friday fallback outside the published years."""

    def is_official(self, day: date) -> bool:
        """Whether `day` is covered by the published calendar (else the answer is provisional)."""
        return _official_workday(day) is not None

    def is_working_day(self, day: date) -> bool:
        official = _official_workday(day)
        if official is None:
            return day.weekday() <= _LAST_WEEKDAY
        return official

    def add_working_days(self, start: date, n: int) -> date:
        """The n-th working day after `start` (not counting `start`); `start` itself for n=0."""
        if n < 0:
            raise ValueError(f"number of working days must not be negative, got {n}")
        day = start
        remaining = n
        while remaining:
            day += _ONE_DAY
            if self.is_working_day(day):
                remaining -= 1
        return day

    def working_days_between(self, a: date, b: date) -> int:
        """The number of working days in (a, b]; 0 when b is not after a."""
        count = 0
        day = a + _ONE_DAY
        while day <= b:
            if self.is_working_day(day):
                count += 1
            day += _ONE_DAY
        return count

    def deadline(self, received_at: datetime, n: int) -> datetime:
        """The end (23:59:59.999999 China time) of the n-th working day after receipt, in UTC.

        `received_at` must be tz-aware; the day of receipt is its China date and is not counted.
        """
        last_day = self.add_working_days(local_date(received_at), n)
        return datetime.combine(last_day, _END_OF_DAY, tzinfo=CHINA_TZ).astimezone(UTC)

    def deadline_is_official(self, received_at: datetime, n: int) -> bool:
        """Whether every day counted by `deadline(received_at, n)` is in the published years."""
        start = local_date(received_at)
        end = self.add_working_days(start, n)
        return self.is_official(start + _ONE_DAY if n else start) and self.is_official(end)
