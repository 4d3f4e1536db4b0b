"""Every refusal of a listing command through the HTTP API: malformed bodies are 400 naming the
field, refusals by a rule of the domain are 422 naming the rule, and both are
`application/problem+json`; nothing answers 500.
"""

from __future__ import annotations

import copy
import itertools
from datetime import timedelta

import pytest

BASE = {
    "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme Trading Co."},
    "list": "blacklist",
    "domain": "taxation",
    "severity": "severe",
    "intent": "intentional",
    "basis": {"decision_no": "D-0", "legal_basis": "law", "facts": "facts"},
    "region": "320100",
    "effective_from": "2025-03-01T00:00:00+08:00",
    "effective_until": "2026-03-01T00:00:00+08:00",
}
DROP = object()
_numbers = itertools.count(1)


def listing(*edits, **changes):
    """A valid body with a fresh decision number, then `edits` of (path, value) applied;
    the value `DROP` removes the field."""
    body = copy.deepcopy(BASE)
    body["basis"]["decision_no"] = f"R-{next(_numbers)}"
    body.update(changes)
    for path, value in edits:
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node[key]
        if value is DROP:
            del node[last]
        else:
            node[last] = value
    return body


def assert_problem(response, status, *, field=None, rule=None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"].startswith("https://")
    assert problem["title"]
    assert problem.get("field") or problem.get("rule"), problem
    if field is not None:
        assert problem.get("field") == field, problem
    if rule is not None:
        assert problem.get("rule") == rule, problem
    return problem


@pytest.fixture(name="tax")
async def fx_tax(make_agency):
    return await make_agency()


async def create(client, headers, body):
    response = await client.post("/v1/listings", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


# -- malformed bodies: 400 naming the field ----------------------------------------------

MALFORMED = [
    # wrong types
    ("list", 5, "list"),
    ("subject.id", 5, "subject.id"),
    ("subject", "uscc:91350100M000100Y43", "subject"),
    ("basis", "decision 1", "basis"),
    ("notice_days", "3", "notice_days"),
    ("notice_days", 2.5, "notice_days"),
    ("effective_from", 20250301, "effective_from"),
    ("severity", ["severe"], "severity"),
    # unknown fields
    ("colour", "red", "colour"),
    ("subject.extra", 1, "subject.extra"),
    ("basis.extra", "x", "basis.extra"),
    # missing fields
    ("basis", DROP, "basis"),
    ("region", DROP, "region"),
    ("effective_from", DROP, "effective_from"),
    ("subject.id", DROP, "subject.id"),
    ("basis.decision_no", DROP, "basis.decision_no"),
    ("effective_until", DROP, "effective_until"),
    # out of bounds
    ("basis.decision_no", "", "basis.decision_no"),
    ("subject.name", "", "subject.name"),
    ("basis.facts", "x" * 4001, "basis.facts"),
    ("notice_days", -1, "notice_days"),
    ("notice_days", 61, "notice_days"),
    # dates
    ("effective_from", "2025-03-01T00:00:00", "effective_from"),
    ("effective_until", "2026-03-01T00:00:00", "effective_until"),
    ("effective_from", "2025-03-01", "effective_from"),
    ("effective_from", "2025-13-01T00:00:00+08:00", "effective_from"),
    ("effective_until", "next year", "effective_until"),
    # enums
    ("list", "greylist", "list"),
    ("severity", "deadly", "severity"),
    ("intent", "careless", "intent"),
    # identifiers and regions
    ("subject.id", "org:91350100M000100Y43", "subject.id"),
    ("subject.id", "uscc:91350100M000100Y44", "subject.id"),
    ("subject.id", "91350100M000100Y43", "subject.id"),
    ("subject.id", "cnid:110101199003070000", "subject.id"),
    ("region", "000000", "region"),
    ("region", "990000", "region"),
    ("region", "32010", "region"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"),
    MALFORMED,
    ids=[f"{p}=" + ("DROP" if v is DROP else repr(v)[:20]) for p, v, _ in MALFORMED],
)
async def test_malformed_listing_is_400_naming_the_field(client, tax, path, value, field):
    response = await client.post("/v1/listings", json=listing((path, value)), headers=tax)
    assert_problem(response, 400, field=field)


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[1, 2]", b'"a string"', b"null", b'{"subject": '],
    ids=["not-json", "empty", "array", "string", "null", "truncated"],
)
async def test_a_body_that_is_not_a_json_object_is_400_naming_the_body(client, tax, content):
    headers = {**tax, "content-type": "application/json"}
    response = await client.post("/v1/listings", content=content, headers=headers)
    assert_problem(response, 400, field="body")


CHANGES = [
    ("delist", {"reason": "bored", "note": "n"}, "reason"),
    ("delist", {"note": "n"}, "reason"),
    ("delist", {"reason": "revoked", "note": "n", "effective_at": "2025-03-04"}, "effective_at"),
    ("amend", {"note": "n", "status": "effective"}, "status"),
    ("amend", {"note": "n", "severity": "huge"}, "severity"),
    ("amend", {"note": "n", "applies_from": "2025-03-01T00:00:00"}, "applies_from"),
    ("amend", {"severity": "general"}, "note"),
    ("objections", {}, "grounds"),
    ("objections", {"grounds": "g", "received_at": "today"}, "received_at"),
    ("objections/1/resolve", {"upheld": "yes", "answer": "a"}, "upheld"),
    ("objections/1/resolve", {"answer": "a"}, "upheld"),
]


@pytest.mark.parametrize(
    ("path", "body", "field"), CHANGES, ids=[f"{p}-{f}-{len(b)}" for p, b, f in CHANGES]
)
async def test_malformed_change_bodies_name_the_field(client, tax, path, body, field):
    listing_id = (await create(client, tax, listing(notice_days=5)))["listing_id"]
    response = await client.post(f"/v1/listings/{listing_id}/{path}", json=body, headers=tax)
    assert_problem(response, 400, field=field)


async def test_malformed_query_parameters_name_the_parameter(client, tax):
    for params, field in [
        ({"after": -1}, "after"),
        ({"after": "abc"}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
    ]:
        response = await client.get("/v1/events", params=params, headers=tax)
        assert_problem(response, 400, field=field)
    response = await client.get(
        "/v1/subjects/uscc:91350100M000100Y43", params={"min_position": -1}, headers=tax
    )
    assert_problem(response, 400, field="min_position")
    response = await client.get("/v1/subjects/uscc:123", headers=tax)
    assert_problem(response, 400, field="subject_id")


# -- rule refusals: 422 naming the rule --------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "longest", "rule"),
    [
        ({"severity": "minor"}, "2025-06-01T00:00:00+08:00", "publication.max_period.minor"),
        ({"severity": "general"}, "2026-03-01T00:00:00+08:00", "publication.max_period.general"),
        ({"severity": "severe"}, "2028-03-01T00:00:00+08:00", "publication.max_period.severe"),
        (
            {"list": "watchlist", "severity": "minor"},
            "2025-06-01T00:00:00+08:00",
            "publication.max_period.minor",
        ),
        (
            {"list": "redlist", "severity": None, "intent": None},
            "2028-03-01T00:00:00+08:00",
            "publication.max_period.redlist",
        ),
    ],
    ids=["minor-3m", "general-12m", "severe-36m", "watchlist-minor", "redlist-36m"],
)
async def test_publication_beyond_the_maximum_is_refused(client, tax, changes, longest, rule):
    refused = await client.post(
        "/v1/listings",
        json=listing(("effective_until", longest.replace("T00:00:00", "T00:00:01")), **changes),
        headers=tax,
    )
    assert_problem(refused, 422, field="effective_until", rule=rule)
    await create(client, tax, listing(("effective_until", longest), **changes))


async def test_a_market_ban_may_be_long_or_permanent(client, tax):
    await create(
        client, tax, listing(("effective_until", "2035-03-01T00:00:00+08:00"), list="market_ban")
    )
    await create(client, tax, listing(("effective_until", None), list="market_ban"))
    forever = await client.post(
        "/v1/listings", json=listing(("effective_until", None)), headers=tax
    )
    assert_problem(forever, 400, field="effective_until")


@pytest.mark.parametrize(
    ("edits", "field", "rule"),
    [
        ((("severity", DROP),), "severity", "severity.required"),
        ((("intent", DROP),), "intent", "intent.required"),
        ((("severity", None),), "severity", "severity.required"),
        ((("list", "redlist"), ("intent", DROP)), "severity", "severity.punitive_only"),
        ((("list", "redlist"), ("severity", DROP)), "intent", "intent.punitive_only"),
        (
            (("effective_until", "2025-01-01T00:00:00+08:00"),),
            "effective_until",
            "period.order",
        ),
        ((("effective_until", "2025-03-01T00:00:00+08:00"),), "effective_until", "period.order"),
        ((("domain", "astrology"),), "domain", "domain.catalogue"),
    ],
    ids=[
        "blacklist-without-severity",
        "blacklist-without-intent",
        "blacklist-null-severity",
        "redlist-with-severity",
        "redlist-with-intent",
        "until-before-from",
        "until-equals-from",
        "unknown-domain",
    ],
)
async def test_rule_refusals_are_422_naming_the_rule(client, tax, edits, field, rule):
    response = await client.post("/v1/listings", json=listing(*edits), headers=tax)
    assert_problem(response, 422, field=field, rule=rule)


async def test_amendments_follow_the_same_rules(client, tax):
    listing_id = (await create(client, tax, listing()))["listing_id"]
    url = f"/v1/listings/{listing_id}/amend"
    too_long = {"note": "n", "effective_until": "2028-03-02T00:00:00+08:00"}
    assert_problem(
        await client.post(url, json=too_long, headers=tax),
        422,
        rule="publication.max_period.severe",
    )
    lighter = {"note": "n", "severity": "general"}  # 12 months: the longest a general may last
    assert (await client.post(url, json=lighter, headers=tax)).status_code == 200
    longer = {"note": "n", "effective_until": "2026-03-02T00:00:00+08:00"}
    assert_problem(
        await client.post(url, json=longer, headers=tax),
        422,
        rule="publication.max_period.general",
    )
    backwards = {"note": "n", "effective_until": "2025-02-01T00:00:00+08:00"}
    assert_problem(await client.post(url, json=backwards, headers=tax), 422, rule="period.order")
    same = {"note": "n", "severity": "general"}
    assert_problem(await client.post(url, json=same, headers=tax), 422, rule="amend.no_change")

    red = await create(client, tax, listing(list="redlist", severity=None, intent=None))
    on_red = {"note": "n", "severity": "minor"}
    response = await client.post(
        f"/v1/listings/{red['listing_id']}/amend", json=on_red, headers=tax
    )
    assert_problem(response, 422, rule="severity.punitive_only")


async def test_a_delisted_listing_cannot_change(client, tax):
    listing_id = (await create(client, tax, listing(notice_days=5)))["listing_id"]
    url = f"/v1/listings/{listing_id}"
    delisted = await client.post(
        f"{url}/delist", json={"reason": "corrected", "note": "n"}, headers=tax
    )
    assert delisted.status_code == 200, delisted.text
    for path, body in [
        ("amend", {"note": "n", "facts": "new"}),
        ("objections", {"grounds": "g"}),
        ("delist", {"reason": "revoked", "note": "n"}),
    ]:
        response = await client.post(f"{url}/{path}", json=body, headers=tax)
        assert_problem(response, 409, rule="listing.delisted")


async def test_objections_outside_the_window_are_refused(client, tax, clock):
    without = (await create(client, tax, listing()))["listing_id"]
    response = await client.post(
        f"/v1/listings/{without}/objections", json={"grounds": "g"}, headers=tax
    )
    assert_problem(response, 422, rule="objection.window_closed")

    listing_id = (await create(client, tax, listing(notice_days=2)))["listing_id"]
    url = f"/v1/listings/{listing_id}/objections"
    registered_at = clock.now()
    clock.advance(timedelta(days=10))
    response = await client.post(url, json={"grounds": "g"}, headers=tax)
    assert_problem(response, 422, rule="objection.window_closed")
    # An objection received inside the window may be recorded after it.
    received = (registered_at + timedelta(hours=4)).isoformat()
    response = await client.post(url, json={"grounds": "g", "received_at": received}, headers=tax)
    assert response.status_code == 201, response.text
    future = (clock.now() + timedelta(hours=1)).isoformat()
    response = await client.post(url, json={"grounds": "g", "received_at": future}, headers=tax)
    assert_problem(response, 400, field="received_at")


async def test_resolving_an_unknown_or_resolved_objection_is_refused(client, tax):
    listing_id = (await create(client, tax, listing(notice_days=5)))["listing_id"]
    url = f"/v1/listings/{listing_id}/objections"
    answer = {"upheld": False, "answer": "a"}
    assert_problem(
        await client.post(f"{url}/1/resolve", json=answer, headers=tax),
        422,
        rule="objection.unknown",
    )
    await client.post(url, json={"grounds": "g"}, headers=tax)
    assert (await client.post(f"{url}/1/resolve", json=answer, headers=tax)).status_code == 200
    assert_problem(
        await client.post(f"{url}/1/resolve", json=answer, headers=tax),
        409,
        rule="objection.resolved",
    )
    assert_problem(
        await client.post(f"{url}/7/resolve", json=answer, headers=tax),
        422,
        rule="objection.unknown",
    )
