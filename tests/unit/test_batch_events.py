"""The import's columnar encoding gives the events `ListingService.prepare_many` gives (the
bytes `register` records): the same listing ids and stored states, row for row."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from test_batch_parse import VARIANTS, good  # this directory is on the path (rootdir-less)

from adapters.batch import parse_columns
from hub.batch_events import encode_events, listing_ids
from hub.credit.rules import ListingRules
from hub.credit.service import Agency, ListingService, _listing_id
from hub.workdays import WorkingCalendar

NOW = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


class _Clock:
    def now(self) -> datetime:
        return NOW


def _agency(code: str) -> Agency:
    return Agency(code, code, frozenset({"publish"}), frozenset({"*"}))


@pytest.mark.parametrize("notice_days", [0, 5])
def test_events_are_those_prepare_many_encodes(notice_days):
    rng = random.Random(5)
    records = [good(**VARIANTS[n % len(VARIANTS)]) for n in range(400)]
    for values in records[::7]:  # some rows of another agency, some with none
        values[4] = rng.choice(["320000-env", "", "320000-tax"])
    columns, _ = parse_columns(list(range(2, 402)), records)
    authority = [code or "320000-tax" for code in columns.authority]
    rules = ListingRules(notice_days=notice_days)
    service = ListingService(None, rules, WorkingCalendar(), _Clock())  # type: ignore[arg-type]
    calendar = WorkingCalendar()
    notice_until = calendar.deadline(NOW, notice_days) if notice_days else None

    events = encode_events(columns, authority, now=NOW, notice_until=notice_until)

    items = [(_agency(code), columns.listing(i)) for i, code in enumerate(authority)]
    prepared = service.prepare_many(items)
    expected = dict(prepared.events)
    compared = 0
    for (listing_id, state), answer in zip(events, prepared.answers, strict=True):
        if answer is None and listing_id in expected:  # not refused, not a repeat
            assert state == expected[listing_id]
            compared += 1
    assert compared > 100


def test_listing_ids_are_uuid5_of_authority_and_decision():
    decisions = [f"苏税罚〔2025〕{n}号" for n in range(50)]  # noqa: RUF001 - as documents write it
    for authority in (["320000-tax"] * 50, ["320000-tax", "320000-env"] * 25):
        expected = [_listing_id(a, d) for a, d in zip(authority, decisions, strict=True)]
        assert listing_ids(authority, decisions) == expected
