"""Check replay: over many generated histories (listings, amendments, objections, delistings,
catalogue changes, time passing, checks in between), every recorded check replays from the log
to the answer the hub gave."""

from __future__ import annotations

import itertools
import random
from datetime import timedelta

import pytest
from conftest import ADMIN, START
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.settings import Settings
from schemas.identifiers import make_uscc

_numbers = itertools.count(1)
_rng = random.Random(6)
MATTERS = ["government_procurement", "bidding", "administrative_licensing", "public_honours"]

register = st.tuples(
    st.just("register"),
    st.integers(0, 2),
    st.sampled_from(["blacklist", "watchlist", "redlist"]),
    st.sampled_from(["general", "severe"]),
    st.integers(-60, 20),
    st.integers(20, 300),
    st.booleans(),
)
amend = st.tuples(
    st.just("amend"),
    st.integers(0, 5),
    st.sampled_from(["severity", "effective_until", "effective_from"]),
    st.integers(-40, 10),
)
delist = st.tuples(
    st.just("delist"),
    st.integers(0, 5),
    st.sampled_from(["repaired", "corrected", "revoked"]),
    st.integers(-30, 5),
)
objection = st.tuples(st.just("object"), st.integers(0, 5), st.booleans())
advance = st.tuples(st.just("advance"), st.integers(1, 20))
measure = st.tuples(
    st.just("measure"),
    st.sampled_from(["prohibit", "restrict", "alert"]),
    st.sampled_from(MATTERS),
    st.booleans(),
)
check = st.tuples(st.just("check"), st.integers(0, 2), st.sampled_from(MATTERS))
history = st.builds(
    lambda first, rest: first + rest,
    st.lists(register, min_size=1, max_size=3),
    st.lists(
        st.one_of(register, amend, delist, objection, advance, measure, check, check),
        min_size=2,
        max_size=12,
    ),
)


@pytest.fixture(name="settings")
def fx_settings(db) -> Settings:
    return Settings(database_url=db.url, database_schema=db.schema, admin_key="hub_admin_test_key")


def _iso(moment) -> str:
    return moment.isoformat()


async def _run(client, tax, clock, ops) -> list[str]:  # noqa: C901, PLR0912 - one match
    """Play one history; returns the ids of the checks it made."""
    clock.set(START)
    subjects = ["uscc:" + make_uscc(_rng) for _ in range(3)]
    listings: list[str] = []
    checks: list[str] = []
    position = 0
    for op in ops:
        now = clock.now()
        response = None
        match op:
            case ("register", s, list_name, severity, start, days, notice):
                body = {
                    "subject": {"id": subjects[s], "name": "Acme"},
                    "list": list_name,
                    "domain": "taxation",
                    "basis": {
                        "decision_no": f"R-{next(_numbers)}",
                        "legal_basis": "l",
                        "facts": "f",
                    },
                    "region": "320100",
                    "effective_from": _iso(now + timedelta(days=start)),
                    "effective_until": _iso(now + timedelta(days=start + days)),
                    "notice_days": 3 if notice else 0,
                }
                if list_name != "redlist":
                    body.update(severity=severity, intent="intentional")
                response = await client.post("/v1/listings", json=body, headers=tax)
                if response.status_code == 201:
                    listings.append(response.json()["listing_id"])
            case ("amend", n, field, offset) if listings:
                lid = listings[n % len(listings)]
                change = (
                    {"severity": "general"}
                    if field == "severity"
                    else {
                        field: _iso(
                            now
                            + timedelta(days=offset + (200 if field == "effective_until" else 0))
                        )
                    }
                )
                response = await client.post(
                    f"/v1/listings/{lid}/amend",
                    json={
                        "note": "n",
                        "applies_from": _iso(now + timedelta(days=offset)),
                        **change,
                    },
                    headers=tax,
                )
            case ("delist", n, reason, offset) if listings:
                response = await client.post(
                    f"/v1/listings/{listings[n % len(listings)]}/delist",
                    json={
                        "reason": reason,
                        "note": "n",
                        "effective_at": _iso(now + timedelta(days=offset)),
                    },
                    headers=tax,
                )
            case ("object", n, upheld) if listings:
                lid = listings[n % len(listings)]
                response = await client.post(
                    f"/v1/listings/{lid}/objections", json={"grounds": "g"}, headers=tax
                )
                if response.status_code == 201:
                    response = await client.post(
                        f"/v1/listings/{lid}/objections/1/resolve",
                        json={"upheld": upheld, "answer": "a"},
                        headers=tax,
                    )
            case ("advance", days):
                clock.advance(timedelta(days=days))
            case ("measure", effect, matter, severe_only):
                body = {
                    "name": f"{effect} {matter}",
                    "kind": "punitive",
                    "effect": effect,
                    "lists": ["blacklist", "watchlist"],
                    "severities": ["severe"] if severe_only else [],
                    "matters": [matter],
                    "agencies": ["财政部门"],
                    "legal_basis": "law",
                }
                response = await client.put(
                    f"/v1/measures/generated.{effect}", json=body, headers=ADMIN
                )
            case ("check", s, matter):
                body = {"subject_id": subjects[s], "matter": matter, "purpose": "p"}
                if s != 2:  # the third subject is checked without waiting for the index
                    body["min_position"] = position
                response = await client.post("/v1/checks", json=body, headers=tax)
                assert response.status_code == 200, response.text
                checks.append(response.json()["check_id"])
        if response is not None:
            assert response.status_code < 500, response.text
            if response.status_code < 300 and "position" in response.json():
                position = max(position, response.json()["position"])
    await _as_of_agrees(client, tax, subjects, position)
    for subject, matter in itertools.product(subjects, MATTERS[:2]):
        body = {"subject_id": subject, "matter": matter, "purpose": "p", "min_position": position}
        response = await client.post("/v1/checks", json=body, headers=tax)
        assert response.status_code == 200, response.text
        checks.append(response.json()["check_id"])
    return checks


async def _as_of_agrees(client, tax, subjects, position) -> None:
    """The subject view from the log equals the bitemporal list view, at several moments."""
    for subject in subjects:
        url = f"/v1/subjects/{subject}?min_position={position}"
        assert (await client.get(url, headers=tax)).status_code == 200
    for days, known in itertools.product((-45, 0, 30, 150), (None, position // 2, position)):
        as_of = _iso(START + timedelta(days=days)).replace("+", "%2B")
        suffix = f"as_of={as_of}" + (f"&known_at={known}" if known is not None else "")
        listed = set()
        for list_name in ("blacklist", "watchlist", "redlist"):
            url = f"/v1/lists/{list_name}?{suffix}&limit=1000&min_position={position}"
            page = await client.get(url, headers=tax)
            assert page.status_code == 200, page.text
            listed |= {
                (x["subject_id"], x["listing_id"], x["severity"], x["effective_until"])
                for x in page.json()["listings"]
                if x["subject_id"] in subjects
            }
        from_log = set()
        for subject in subjects:
            profile = await client.get(f"/v1/subjects/{subject}?{suffix}", headers=tax)
            assert profile.status_code == 200, profile.text
            from_log |= {
                (subject, x["listing_id"], x["severity"], x["effective_until"])
                for x in profile.json()["active"]
            }
        assert listed == from_log, (days, known)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=history)
async def test_every_check_replays_to_its_answer(client, make_agency, clock, ops):
    tax = getattr(client, "_tax", None)
    if tax is None:
        tax = client._tax = await make_agency("320000-tax", ("publish", "check", "audit"))
    for check_id in await _run(client, tax, clock, ops):
        response = await client.get(f"/v1/checks/{check_id}/replay", headers=tax)
        assert response.status_code == 200, response.text
        replay = response.json()
        assert replay["matches"], replay
        assert replay["tree_size"] >= 1
