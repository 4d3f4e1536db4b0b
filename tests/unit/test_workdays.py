"""Working days on the official Chinese calendar, and the clocks deadlines are measured with.

Only fixed historical dates are used, so the tests do not change meaning as time passes.
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta, timezone

import chinese_calendar
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.clock import CHINA_TZ, Clock, SettableClock, SystemClock, local_date
from hub.workdays import WorkingCalendar

CAL = WorkingCalendar()
NATIONAL_DAY_2024 = [date(2024, 10, d) for d in range(1, 8)]
SPRING_FESTIVAL_2025 = [date(2025, 1, d) for d in range(28, 32)] + [
    date(2025, 2, d) for d in range(1, 5)
]
MAKE_UP_DAYS = [date(2024, 9, 29), date(2024, 10, 12), date(2025, 1, 26), date(2025, 2, 8)]


def test_expectations_agree_with_chinese_calendar():
    for day in NATIONAL_DAY_2024 + SPRING_FESTIVAL_2025:
        assert chinese_calendar.is_holiday(day)
    for day in MAKE_UP_DAYS:
        assert day.weekday() >= 5
        assert chinese_calendar.is_workday(day)


@pytest.mark.parametrize("day", NATIONAL_DAY_2024 + SPRING_FESTIVAL_2025)
def test_official_holidays_are_off(day):
    assert not CAL.is_working_day(day)
    assert CAL.is_official(day)


@pytest.mark.parametrize("day", MAKE_UP_DAYS)
def test_make_up_weekends_are_working_days(day):
    assert CAL.is_working_day(day)


def test_agrees_with_package_over_two_years():
    day = date(2024, 1, 1)
    while day < date(2026, 1, 1):
        assert CAL.is_working_day(day) == chinese_calendar.is_workday(day), day
        day += timedelta(days=1)


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        # 09-28 Sat off, 09-29 Sun make-up = 1, 09-30 Mon = 2, 10-01..07 off, 10-08 = 3
        (date(2024, 9, 27), 3, date(2024, 10, 8)),
        (date(2024, 9, 27), 1, date(2024, 9, 29)),
        (date(2024, 9, 30), 1, date(2024, 10, 8)),
        # 10-08..11 = 1..4, 10-12 Sat make-up = 5
        (date(2024, 10, 7), 5, date(2024, 10, 12)),
        (date(2025, 1, 24), 1, date(2025, 1, 26)),
        (date(2025, 1, 27), 1, date(2025, 2, 5)),
        (date(2025, 2, 7), 1, date(2025, 2, 8)),
        # 01-26 Sun, 01-27 Mon, then 02-05..08
        (date(2025, 1, 25), 6, date(2025, 2, 8)),
        (date(2024, 9, 27), 0, date(2024, 9, 27)),
    ],
)
def test_add_working_days(start, n, expected):
    assert CAL.add_working_days(start, n) == expected


def test_negative_count_is_an_error():
    with pytest.raises(ValueError, match="must not be negative"):
        CAL.add_working_days(date(2024, 9, 27), -1)


def test_working_days_between():
    assert CAL.working_days_between(date(2024, 9, 27), date(2024, 10, 8)) == 3
    assert CAL.working_days_between(date(2025, 1, 27), date(2025, 2, 4)) == 0
    assert CAL.working_days_between(date(2024, 10, 8), date(2024, 9, 27)) == 0
    assert CAL.working_days_between(date(2024, 9, 27), date(2024, 9, 27)) == 0


@given(st.dates(date(1995, 1, 1), date(2035, 12, 31)), st.integers(0, 40))
def test_between_inverts_add(start, n):
    end = CAL.add_working_days(start, n)
    assert CAL.working_days_between(start, end) == n
    assert n == 0 or CAL.is_working_day(end)


def test_deadline_is_end_of_china_day_in_utc():
    received = datetime(2024, 9, 27, 10, 0, tzinfo=CHINA_TZ)
    due = CAL.deadline(received, 3)
    assert due == datetime(2024, 10, 8, 15, 59, 59, 999_999, tzinfo=UTC)
    assert due.utcoffset() == timedelta(0)
    assert due.astimezone(CHINA_TZ).time().isoformat() == "23:59:59.999999"
    assert CAL.deadline_is_official(received, 3)


def test_deadline_counts_from_the_china_date():
    # 2024-09-29 17:00 UTC is already Monday 09-30 01:00 in China
    received = datetime(2024, 9, 29, 17, 0, tzinfo=UTC)
    assert CAL.deadline(received, 1) == datetime(2024, 10, 8, 15, 59, 59, 999_999, tzinfo=UTC)


def test_naive_receipt_is_refused():
    with pytest.raises(ValueError, match="no timezone"):
        CAL.deadline(datetime(2024, 9, 27, 10, 0), 3)  # noqa: DTZ001


def test_unknown_years_fall_back_to_weekdays():
    with pytest.raises(NotImplementedError):
        chinese_calendar.is_workday(date(2200, 1, 1))
    wednesday, saturday = date(2200, 1, 1), date(2200, 1, 4)
    assert not CAL.is_official(wednesday)
    assert CAL.is_working_day(wednesday)
    assert not CAL.is_working_day(saturday)
    # Wed 01-01 + 3 = Thu, Fri, Mon
    assert CAL.add_working_days(wednesday, 3) == date(2200, 1, 6)
    assert CAL.working_days_between(date(2199, 12, 31), date(2200, 1, 7)) == 5
    received = datetime(2200, 1, 1, 9, 0, tzinfo=CHINA_TZ)
    assert CAL.deadline(received, 3) == datetime(2200, 1, 6, 15, 59, 59, 999_999, tzinfo=UTC)
    assert not CAL.deadline_is_official(received, 3)
    assert not CAL.is_official(date(1990, 1, 1))


def test_deadline_running_into_an_unknown_year_is_provisional():
    last_known = date(2026, 12, 31)
    assert CAL.is_official(last_known)
    assert CAL.is_working_day(last_known)
    received = datetime(2026, 12, 30, 9, 0, tzinfo=CHINA_TZ)
    assert CAL.deadline_is_official(received, 1)
    assert not CAL.deadline_is_official(received, 2)
    assert CAL.add_working_days(last_known, 2) == date(2027, 1, 4)


# --- clocks -----------------------------------------------------------------------------------


def test_settable_clock_set_and_advance():
    start = datetime(2024, 9, 27, 10, 0, tzinfo=CHINA_TZ)
    clock = SettableClock(start)
    assert isinstance(clock, Clock)
    assert clock.now() == start
    assert clock.now().tzinfo is UTC
    assert clock.advance(timedelta(hours=15)) == datetime(2024, 9, 27, 17, 0, tzinfo=UTC)
    assert local_date(clock.now()) == date(2024, 9, 28)
    clock.set(datetime(2025, 1, 1, tzinfo=timezone(timedelta(hours=-5))))
    assert clock.now() == datetime(2025, 1, 1, 5, 0, tzinfo=UTC)
    assert clock.now().tzinfo is UTC


def test_settable_clock_refuses_naive_datetimes():
    with pytest.raises(ValueError, match="no timezone"):
        SettableClock(datetime(2024, 9, 27))  # noqa: DTZ001
    clock = SettableClock(datetime(2024, 9, 27, tzinfo=UTC))
    with pytest.raises(ValueError, match="no timezone"):
        clock.set(datetime(2024, 9, 28))  # noqa: DTZ001


def test_settable_clock_is_thread_safe():
    start = datetime(2024, 9, 27, tzinfo=UTC)
    clock = SettableClock(start)

    def tick():
        for _ in range(2000):
            clock.advance(timedelta(seconds=1))

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.now() == start + timedelta(seconds=16_000)


def test_system_clock_is_aware_utc():
    before = datetime.now(UTC)
    now = SystemClock().now()
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC)
    assert isinstance(SystemClock(), Clock)


def test_local_date_uses_china_time():
    assert local_date(datetime(2024, 9, 30, 15, 59, tzinfo=UTC)) == date(2024, 9, 30)
    assert local_date(datetime(2024, 9, 30, 16, 0, tzinfo=UTC)) == date(2024, 10, 1)
