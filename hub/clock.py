"""Time for the hub: an injectable clock, always tz-aware UTC, and China local dates.

Code that needs "now" takes a `Clock` rather than calling `datetime.now`, so that tests can
use a `SettableClock` and step through deadlines. Working-day deadlines are counted on China
dates (`local_date`), whatever the timezone of the instant.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Final, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

__all__ = ["CHINA_TZ", "Clock", "SettableClock", "SystemClock", "local_date"]

CHINA_TZ: Final = ZoneInfo("Asia/Shanghai")


def _aware_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"datetime {value.isoformat()} has no timezone")
    return value.astimezone(UTC)


@runtime_checkable
class Clock(Protocol):
    """A source of the current instant."""

    def now(self) -> datetime:
        """The current instant, tz-aware, in UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class SettableClock:
    """A clock that stands still until set or advanced; safe to share between threads."""

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._now = _aware_utc(start)

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, value: datetime) -> None:
        """Jump to `value`, which must be tz-aware (it may go backwards)."""
        aware = _aware_utc(value)
        with self._lock:
            self._now = aware

    def advance(self, delta: timedelta) -> datetime:
        """Move forward (or back, for a negative delta) and return the new instant."""
        with self._lock:
            self._now += delta
            return self._now


def local_date(value: datetime) -> date:
    """The calendar date in China (Asia/Shanghai) at the tz-aware instant `value`."""
    return _aware_utc(value).astimezone(CHINA_TZ).date()
