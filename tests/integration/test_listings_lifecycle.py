"""The listing lifecycle through the HTTP API, step by step, against a real PostgreSQL.

noticed (objection window) → objected → resolved (rejected: noticed again, then effective when
the window ends; upheld: delisted) → amended → delisted with each reason; the history of a
listing, a subject's active and pending listings, and the log read page by page.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from datetime import UTC, datetime, timedelta

import pytest

SUBJECT = "uscc:91350100M000100Y43"
BASE = {
    "subject": {"id": SUBJECT, "name": "Acme Trading Co."},
    "list": "blacklist",
    "domain": "taxation",
    "severity": "severe",
    "intent": "intentional",
    "basis": {
        "decision_no": "D-0",
        "legal_basis": "税收征收管理法 第六十三条",
        "facts": "虚开发票",
    },
    "region": "320100",
    "effective_from": "2025-03-01T00:00:00+08:00",
    "effective_until": "2026-03-01T00:00:00+08:00",
}
DECISION = "苏税罚〔2025〕{}号"  # noqa: RUF001 - the brackets of real decision numbers
_numbers = itertools.count(1)


def listing(**changes):
    """A valid listing body with a fresh decision number; keyword arguments replace fields."""
    body = copy.deepcopy(BASE)
    body["basis"]["decision_no"] = DECISION.format(next(_numbers))
    body.update(changes)
    return body


def assert_problem(response, status, *, field=None, rule=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem.get("field") or problem.get("rule"), problem
    if field is not None:
        assert problem.get("field") == field, problem
    if rule is not None:
        assert problem.get("rule") == rule, problem
    return problem


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


async def create(client, headers, body, status=201):
    response = await client.post("/v1/listings", json=body, headers=headers)
    assert response.status_code == status, response.text
    return response.json()


async def detail(client, headers, listing_id):
    response = await client.get(f"/v1/listings/{listing_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def profile(client, headers, position, subject=SUBJECT):
    """(active, pending) listing ids of a subject once the read model has reached `position`."""
    for _ in range(10):  # 503 + Retry-After while the read model is behind; a client retries
        response = await client.get(
            f"/v1/subjects/{subject}", params={"min_position": position}, headers=headers
        )
        if response.status_code != 503:
            break
        await asyncio.sleep(0.5)
    assert response.status_code == 200, response.text
    found = response.json()
    return [i["listing_id"] for i in found["active"]], [i["listing_id"] for i in found["pending"]]


async def test_notice_window_then_effective_when_it_ends(client, make_agency, clock):
    tax = await make_agency()
    created = await create(client, tax, listing(notice_days=5))
    assert created["status"] == "noticed"
    assert created["position"] >= 1
    listing_id = created["listing_id"]

    state = (await detail(client, tax, listing_id))["listing"]
    # Monday 2025-03-03 + 5 working days = Monday 2025-03-10, to the end of that day in China.
    assert instant(state["notice_until"]) == datetime(2025, 3, 10, 15, 59, 59, 999999, UTC)
    assert state["status"] == "noticed"
    assert await profile(client, tax, created["position"]) == ([], [listing_id])

    clock.set(instant(state["notice_until"]) - timedelta(seconds=1))
    assert (await detail(client, tax, listing_id))["listing"]["status"] == "noticed"
    clock.set(instant(state["notice_until"]) + timedelta(seconds=1))
    assert (await detail(client, tax, listing_id))["listing"]["status"] == "effective"
    assert await profile(client, tax, created["position"]) == ([listing_id], [])


async def test_notice_window_counts_official_working_days(client, make_agency, clock):
    tax = await make_agency()
    clock.set(datetime(2025, 9, 30, 2, 0, tzinfo=UTC))  # Tuesday before the National Day week
    created = await create(client, tax, listing(notice_days=1))
    state = (await detail(client, tax, created["listing_id"]))["listing"]
    # 1-8 October 2025 are holidays; Thursday 9 October is the next working day.
    assert instant(state["notice_until"]) == datetime(2025, 10, 9, 15, 59, 59, 999999, UTC)


async def test_without_a_window_a_listing_is_effective_at_once(client, make_agency):
    tax = await make_agency()
    created = await create(client, tax, listing())
    assert created["status"] == "effective"
    assert (await detail(client, tax, created["listing_id"]))["listing"]["notice_until"] is None
    assert await profile(client, tax, created["position"]) == ([created["listing_id"]], [])


async def test_objection_rejected_returns_to_noticed_then_effective(client, make_agency, clock):
    tax = await make_agency()
    created = await create(client, tax, listing(notice_days=5))
    listing_id = created["listing_id"]
    clock.advance(timedelta(days=1))

    objected = await client.post(
        f"/v1/listings/{listing_id}/objections", json={"grounds": "已缴清税款"}, headers=tax
    )
    assert objected.status_code == 201, objected.text
    assert objected.json()["status"] == "objected"
    assert objected.json()["position"] > created["position"]
    assert await profile(client, tax, objected.json()["position"]) == ([], [listing_id])

    notice_until = instant((await detail(client, tax, listing_id))["listing"]["notice_until"])
    clock.set(notice_until + timedelta(hours=1))  # the window ends with the objection pending
    state = (await detail(client, tax, listing_id))["listing"]
    assert state["status"] == "objected"
    assert await profile(client, tax, objected.json()["position"]) == ([], [listing_id])
    assert state["objections"][0]["n"] == 1
    assert state["objections"][0]["resolved"] is False

    resolved = await client.post(
        f"/v1/listings/{listing_id}/objections/1/resolve",
        json={"upheld": False, "answer": "税款缴清不影响认定"},
        headers=tax,
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["position"] > objected.json()["position"]
    # The window is over and nothing is pending: the listing is in force.
    assert resolved.json()["status"] == "effective"
    state = (await detail(client, tax, listing_id))["listing"]
    assert state["objections"][0] | {"resolved": True, "upheld": False} == state["objections"][0]
    assert await profile(client, tax, resolved.json()["position"]) == ([listing_id], [])


async def test_objection_rejected_inside_the_window_is_noticed_again(client, make_agency, clock):
    tax = await make_agency()
    listing_id = (await create(client, tax, listing(notice_days=5)))["listing_id"]
    await client.post(f"/v1/listings/{listing_id}/objections", json={"grounds": "g"}, headers=tax)
    resolved = await client.post(
        f"/v1/listings/{listing_id}/objections/1/resolve",
        json={"upheld": False, "answer": "a"},
        headers=tax,
    )
    assert resolved.json()["status"] == "noticed"
    clock.advance(timedelta(days=14))
    assert (await detail(client, tax, listing_id))["listing"]["status"] == "effective"


async def test_objection_upheld_delists(client, make_agency):
    tax = await make_agency()
    listing_id = (await create(client, tax, listing(notice_days=5)))["listing_id"]
    await client.post(f"/v1/listings/{listing_id}/objections", json={"grounds": "g"}, headers=tax)
    resolved = await client.post(
        f"/v1/listings/{listing_id}/objections/1/resolve",
        json={"upheld": True, "answer": "认定有误"},
        headers=tax,
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["status"] == "delisted"
    found = await detail(client, tax, listing_id)
    assert found["listing"]["status"] == "delisted"
    assert found["listing"]["delist_reason"] == "objection_upheld"
    assert [e["type"] for e in found["events"]] == [
        "listing.registered",
        "listing.objected",
        "listing.objection_resolved",
        "listing.delisted",
    ]
    assert found["events"][-1]["position"] == resolved.json()["position"]
    assert await profile(client, tax, resolved.json()["position"]) == ([], [])


async def test_amend_changes_terms_and_keeps_history(client, make_agency):
    tax = await make_agency()
    created = await create(client, tax, listing())
    listing_id = created["listing_id"]
    amended = await client.post(
        f"/v1/listings/{listing_id}/amend",
        json={
            "note": "复议变更",
            "severity": "general",
            "effective_until": "2025-12-01T00:00:00+08:00",
            "facts": "少缴税款",
        },
        headers=tax,
    )
    assert amended.status_code == 200, amended.text
    assert amended.json()["status"] == "effective"
    assert amended.json()["position"] > created["position"]
    found = await detail(client, tax, listing_id)
    state = found["listing"]
    assert state["severity"] == "general"
    assert state["basis"]["facts"] == "少缴税款"
    assert instant(state["effective_until"]) == instant("2025-12-01T00:00:00+08:00")
    assert state["version"] == 2
    assert [e["type"] for e in found["events"]] == ["listing.registered", "listing.amended"]
    changes = found["events"][1]["data"]["changes"]
    assert set(changes) == {"severity", "effective_until", "facts"}
    assert found["events"][1]["data"]["note"] == "复议变更"


@pytest.mark.parametrize(
    "reason", ["expired", "repaired", "corrected", "objection_upheld", "revoked"]
)
async def test_delist_with_each_reason(client, make_agency, reason):
    tax = await make_agency()
    created = await create(client, tax, listing())
    listing_id = created["listing_id"]
    assert await profile(client, tax, created["position"]) == ([listing_id], [])
    delisted = await client.post(
        f"/v1/listings/{listing_id}/delist", json={"reason": reason, "note": "说明"}, headers=tax
    )
    assert delisted.status_code == 200, delisted.text
    assert delisted.json() == {
        "listing_id": listing_id,
        "status": "delisted",
        "position": delisted.json()["position"],
    }
    assert delisted.json()["position"] > created["position"]
    state = (await detail(client, tax, listing_id))["listing"]
    assert (state["status"], state["delist_reason"]) == ("delisted", reason)
    assert await profile(client, tax, delisted.json()["position"]) == ([], [])
    again = await client.post(
        f"/v1/listings/{listing_id}/delist", json={"reason": reason, "note": "再次"}, headers=tax
    )
    assert_problem(again, 409, rule="listing.delisted")


async def test_history_lists_every_event_in_position_order(client, make_agency, clock):
    tax = await make_agency()
    created = await create(client, tax, listing(notice_days=3))
    listing_id = created["listing_id"]
    other = await create(client, tax, listing())  # interleaved: positions of one listing skip
    answers = [created]
    for path, body in [
        ("objections", {"grounds": "g"}),
        ("objections/1/resolve", {"upheld": False, "answer": "a"}),
        ("amend", {"note": "n", "facts": "更正事实"}),
        ("delist", {"reason": "repaired", "note": "修复"}),
    ]:
        clock.advance(timedelta(minutes=5))
        await create(client, tax, listing())
        response = await client.post(f"/v1/listings/{listing_id}/{path}", json=body, headers=tax)
        assert response.status_code in (200, 201), response.text
        answers.append(response.json())

    found = await detail(client, tax, listing_id)
    events = found["events"]
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5]
    assert [e["position"] for e in events] == [a["position"] for a in answers]
    assert [e["position"] for e in events] == sorted({e["position"] for e in events})
    assert other["position"] not in [e["position"] for e in events]
    assert {e["aggregate_id"] for e in events} == {listing_id}
    assert len({e["id"] for e in events}) == 5
    times = [instant(e["time"]) for e in events]
    assert times == sorted(times)
    assert events[0]["data"]["decision_no"] == found["listing"]["basis"]["decision_no"]
    assert found["listing"]["version"] == 5


async def test_unknown_listing_is_404_and_a_bad_id_is_400(client, make_agency):
    tax = await make_agency()
    missing = "6f0c6b8e-0000-4000-8000-000000000000"
    assert_problem(await client.get(f"/v1/listings/{missing}", headers=tax), 404)
    delist = await client.post(
        f"/v1/listings/{missing}/delist", json={"reason": "revoked", "note": "n"}, headers=tax
    )
    assert_problem(delist, 404, field="listing_id")
    assert_problem(await client.get("/v1/listings/nope", headers=tax), 400, field="listing_id")


async def test_subject_shows_active_and_pending_of_every_authority(client, make_agency):
    tax = await make_agency()
    env = await make_agency("320000-env", domains=("environment",))
    active = await create(client, tax, listing())
    pending = await create(client, env, listing(domain="environment", notice_days=10))
    redlist = await create(
        client, env, listing(domain="environment", list="redlist", severity=None, intent=None)
    )
    ended = await create(client, tax, listing())
    delisted = await client.post(
        f"/v1/listings/{ended['listing_id']}/delist",
        json={"reason": "revoked", "note": "撤销"},
        headers=tax,
    )
    position = delisted.json()["position"]
    response = await client.get(
        f"/v1/subjects/{SUBJECT}", params={"min_position": position}, headers=env
    )
    assert response.status_code == 200, response.text
    found = response.json()
    assert found["subject_id"] == SUBJECT
    assert found["names"] == ["Acme Trading Co."]
    assert {i["listing_id"] for i in found["active"]} == {
        active["listing_id"],
        redlist["listing_id"],
    }
    assert [i["listing_id"] for i in found["pending"]] == [pending["listing_id"]]
    by_id = {i["listing_id"]: i for i in found["active"] + found["pending"]}
    assert by_id[active["listing_id"]]["authority"] == "320000-tax"
    assert by_id[pending["listing_id"]]["status"] == "noticed"
    other = "uscc:91320000MA1MXX8X8M"
    assert await profile(client, tax, position, subject=other) == ([], [])


async def listing_events(client, headers):
    """The listing events of the whole log (other families, such as the catalogue, skipped)."""
    response = await client.get("/v1/events", params={"limit": 10_000}, headers=headers)
    assert response.status_code == 200, response.text
    return [e for e in response.json()["events"] if e["type"].startswith("listing.")]


async def test_events_pages_with_after_limit_and_next_after(client, make_agency):
    tax = await make_agency()
    answers = [await create(client, tax, listing()) for _ in range(7)]
    delisted = await client.post(
        f"/v1/listings/{answers[0]['listing_id']}/delist",
        json={"reason": "corrected", "note": "n"},
        headers=tax,
    )
    expected = [a["position"] for a in answers] + [delisted.json()["position"]]

    seen, after = [], 0
    while True:
        response = await client.get("/v1/events", params={"after": after, "limit": 3}, headers=tax)
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["events"]:
            assert page["next_after"] == after
            break
        assert len(page["events"]) <= 3
        assert all(e["position"] > after for e in page["events"])
        assert page["next_after"] == page["events"][-1]["position"]
        seen.extend(page["events"])
        after = page["next_after"]
    positions = [e["position"] for e in seen]
    assert positions == sorted(set(positions))
    listed = [e for e in seen if e["type"].startswith("listing.")]
    assert [e["position"] for e in listed] == expected
    assert [e["type"] for e in listed] == ["listing.registered"] * 7 + ["listing.delisted"]
    assert len({e["id"] for e in seen}) == len(seen)
    assert listed[0]["aggregate_id"] == answers[0]["listing_id"]
    assert {"position", "id", "type", "time", "data"} <= set(listed[0])

    middle = await client.get("/v1/events", params={"after": expected[2], "limit": 2}, headers=tax)
    assert [e["position"] for e in middle.json()["events"]] == expected[3:5]
    assert [e["position"] for e in await listing_events(client, tax)] == expected


async def test_identical_repeat_is_200_with_the_same_id_and_position(client, make_agency):
    tax = await make_agency()
    body = listing()
    first = await client.post("/v1/listings", json=body, headers=tax)
    assert first.status_code == 201, first.text
    again = await client.post("/v1/listings", json=body, headers=tax)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert [e["type"] for e in await listing_events(client, tax)] == ["listing.registered"]


async def test_concurrent_repeats_create_one_listing(client, make_agency):
    tax = await make_agency()
    body = listing()
    answers = await asyncio.gather(
        *(client.post("/v1/listings", json=body, headers=tax) for _ in range(8))
    )
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["listing_id"] for a in answers}) == 1
    assert len({a.json()["position"] for a in answers}) == 1
    assert [e["type"] for e in await listing_events(client, tax)] == ["listing.registered"]


async def test_same_decision_with_other_content_is_409(client, make_agency):
    tax = await make_agency()
    body = listing()
    first = await create(client, tax, body)
    changed = copy.deepcopy(body)
    changed["basis"]["facts"] = "另一事实"
    assert_problem(
        await client.post("/v1/listings", json=changed, headers=tax),
        409,
        field="basis.decision_no",
        rule="listing.decision_conflict",
    )
    later = copy.deepcopy(body)
    later["effective_until"] = "2026-06-01T00:00:00+08:00"
    assert_problem(
        await client.post("/v1/listings", json=later, headers=tax), 409, field="basis.decision_no"
    )
    # The original is untouched and still answers its repeat.
    again = await client.post("/v1/listings", json=body, headers=tax)
    assert (again.status_code, again.json()) == (200, first)


async def test_same_decision_number_of_another_authority_is_another_listing(client, make_agency):
    tax = await make_agency()
    city = await make_agency("320100-tax")
    body = listing()
    mine = await create(client, tax, body)
    theirs = await create(client, city, body)
    assert mine["listing_id"] != theirs["listing_id"]


async def test_repeat_after_a_change_answers_the_listing_as_it_is(client, make_agency):
    tax = await make_agency()
    body = listing()
    created = await create(client, tax, body)
    delisted = await client.post(
        f"/v1/listings/{created['listing_id']}/delist",
        json={"reason": "revoked", "note": "n"},
        headers=tax,
    )
    again = await client.post("/v1/listings", json=body, headers=tax)
    assert again.status_code == 200, again.text
    assert again.json() == delisted.json()
