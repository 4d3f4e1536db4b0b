"""Who may do what, through the HTTP API: keys (401), scopes (403 `auth.scope`), the authority
that made a listing (403 `authority.owner`) and the domains of a key (403 `authority.domain`);
agencies are registered only with the admin key, and keys are stored hashed.
"""

from __future__ import annotations

import copy
import hashlib
import itertools

import asyncpg
import pytest

ADMIN = {"Authorization": "Bearer hub_admin_test_key"}
BASE = {
    "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme Trading Co."},
    "list": "blacklist",
    "domain": "taxation",
    "severity": "general",
    "intent": "unintentional",
    "basis": {"decision_no": "A-0", "legal_basis": "law", "facts": "facts"},
    "region": "320100",
    "effective_from": "2025-03-01T00:00:00+08:00",
    "effective_until": "2026-03-01T00:00:00+08:00",
}
_numbers = itertools.count(1)


def listing(**changes):
    body = copy.deepcopy(BASE)
    body["basis"]["decision_no"] = f"A-{next(_numbers)}"
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


async def create(client, headers, body):
    response = await client.post("/v1/listings", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


LISTING_ID = "6f0c6b8e-0000-4000-8000-000000000000"
ENDPOINTS = [
    ("POST", "/v1/listings", listing()),
    ("GET", f"/v1/listings/{LISTING_ID}", None),
    ("POST", f"/v1/listings/{LISTING_ID}/objections", {"grounds": "g"}),
    ("POST", f"/v1/listings/{LISTING_ID}/objections/1/resolve", {"upheld": True, "answer": "a"}),
    ("POST", f"/v1/listings/{LISTING_ID}/amend", {"note": "n", "facts": "f"}),
    ("POST", f"/v1/listings/{LISTING_ID}/delist", {"reason": "revoked", "note": "n"}),
    ("GET", "/v1/subjects/uscc:91350100M000100Y43", None),
    ("GET", "/v1/events", None),
    ("POST", "/v1/agencies", {"code": "x-1", "name": "x", "scopes": [], "domains": []}),
]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer hub_not_a_key", "Bearer ", "Basic aHViOmh1Yg==", "hub_admin_test_key"],
    ids=["none", "unknown-key", "empty-bearer", "basic", "no-scheme"],
)
async def test_without_a_valid_key_every_endpoint_is_401(client, make_agency, authorization):
    await make_agency()  # the hub knows some keys, just not this one
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path, body in ENDPOINTS:
        response = await client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"].endswith("/unauthenticated")


async def test_a_401_names_the_header_and_the_scheme(client):
    for headers in ({}, {"Authorization": "Bearer hub_not_a_key"}):
        response = await client.post("/v1/listings", json=listing(), headers=headers)
        assert_problem(response, 401, field="authorization")
        # RFC 9110 section 15.5.2: a 401 carries a challenge.
        assert response.headers.get("www-authenticate", "").startswith("Bearer")


async def test_operational_endpoints_need_no_key(client):
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert (await client.get("/openapi.json")).json()["paths"]["/v1/listings"]


async def test_each_endpoint_needs_its_scope(client, make_agency):
    publisher = await make_agency("320000-tax", scopes=("publish",))
    checker = await make_agency("320000-check", scopes=("check",))
    subscriber = await make_agency("320000-feed", scopes=("subscribe",))
    auditor = await make_agency("320000-audit", scopes=("audit",))
    nobody = await make_agency("320000-none", scopes=())

    created = await create(client, publisher, listing())
    listing_id = created["listing_id"]
    commands = [
        ("/v1/listings", listing()),
        (f"/v1/listings/{listing_id}/objections", {"grounds": "g"}),
        (f"/v1/listings/{listing_id}/objections/1/resolve", {"upheld": True, "answer": "a"}),
        (f"/v1/listings/{listing_id}/amend", {"note": "n", "facts": "f"}),
        (f"/v1/listings/{listing_id}/delist", {"reason": "revoked", "note": "n"}),
    ]
    for headers in (checker, subscriber, auditor, nobody):
        for path, body in commands:
            response = await client.post(path, json=body, headers=headers)
            assert_problem(response, 403, rule="auth.scope")

    reads = [f"/v1/listings/{listing_id}", "/v1/subjects/uscc:91350100M000100Y43"]
    for headers in (publisher, checker, subscriber, auditor):
        for path in reads:
            assert (await client.get(path, headers=headers)).status_code == 200
    for path in reads:
        assert_problem(await client.get(path, headers=nobody), 403, rule="auth.scope")

    for headers in (subscriber, auditor):
        assert (await client.get("/v1/events", headers=headers)).status_code == 200
    for headers in (publisher, checker, nobody):
        assert_problem(await client.get("/v1/events", headers=headers), 403, rule="auth.scope")


async def test_only_the_admin_key_registers_agencies(client, make_agency, db):
    everything = await make_agency(
        "320000-all", scopes=("publish", "check", "subscribe", "audit"), domains=("*",)
    )
    body = {"code": "320500-tax", "name": "Suzhou Tax", "scopes": ["publish"], "domains": ["*"]}
    response = await client.post("/v1/agencies", json=body, headers=everything)
    assert_problem(response, 403, rule="auth.scope")

    created = await client.post("/v1/agencies", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    key = created.json()["api_key"]
    assert created.json()["code"] == "320500-tax"
    assert key.startswith("hub_")
    assert len(key) >= 40

    # The key works at once, and the hub keeps only its hash.
    await create(client, {"Authorization": f"Bearer {key}"}, listing(domain="customs"))
    conn = await asyncpg.connect(db.url, server_settings={"search_path": db.schema})
    try:
        rows = await conn.fetch("SELECT code, key_hash FROM agencies")
        dump = await conn.fetchval("SELECT string_agg(agencies::text, ' ') FROM agencies")
    finally:
        await conn.close()
    assert dict(rows)["320500-tax"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in dump
    assert key[4:] not in dump


async def test_agency_registration_is_validated(client):
    good = {"code": "320000-tax", "name": "Jiangsu Tax", "scopes": ["publish"], "domains": []}
    assert (await client.post("/v1/agencies", json=good, headers=ADMIN)).status_code == 201
    assert_problem(
        await client.post("/v1/agencies", json=good, headers=ADMIN),
        409,
        field="code",
        rule="agency.exists",
    )
    for changes, field in [
        ({"code": "a b"}, "code"),
        ({"code": "x"}, "code"),
        ({"scopes": ["publish", "root"]}, "scopes.1"),
        ({"domains": ["astrology"]}, "domains.0"),
        ({"scopes": "publish"}, "scopes"),
        ({"colour": "red"}, "colour"),
    ]:
        body = good | {"code": "320000-new"} | changes
        response = await client.post("/v1/agencies", json=body, headers=ADMIN)
        assert_problem(response, 400, field=field)


async def test_another_authority_may_not_change_a_listing(client, make_agency):
    tax = await make_agency("320000-tax")
    city = await make_agency("320100-tax")  # same scopes and domain, another authority
    listing_id = (await create(client, tax, listing(notice_days=5)))["listing_id"]
    for path, body in [
        ("objections", {"grounds": "g"}),
        ("amend", {"note": "n", "facts": "其他事实"}),
        ("delist", {"reason": "revoked", "note": "n"}),
    ]:
        response = await client.post(f"/v1/listings/{listing_id}/{path}", json=body, headers=city)
        assert_problem(response, 403, rule="authority.owner")
    objected = await client.post(
        f"/v1/listings/{listing_id}/objections", json={"grounds": "g"}, headers=tax
    )
    assert objected.status_code == 201, objected.text
    response = await client.post(
        f"/v1/listings/{listing_id}/objections/1/resolve",
        json={"upheld": True, "answer": "a"},
        headers=city,
    )
    assert_problem(response, 403, rule="authority.owner")
    # Nothing the other authority tried reached the log.
    found = (await client.get(f"/v1/listings/{listing_id}", headers=tax)).json()
    assert [e["type"] for e in found["events"]] == ["listing.registered", "listing.objected"]
    assert found["listing"]["status"] == "objected"


async def test_a_key_lists_only_in_its_domains(client, make_agency):
    tax = await make_agency("320000-tax", domains=("taxation",))
    both = await make_agency("320000-multi", domains=("taxation", "environment"))
    anywhere = await make_agency("320000-any", domains=("*",))
    response = await client.post("/v1/listings", json=listing(domain="environment"), headers=tax)
    assert_problem(response, 403, field="domain", rule="authority.domain")
    await create(client, both, listing(domain="environment"))
    await create(client, anywhere, listing(domain="courts"))
    # An unknown domain is refused by the catalogue, whatever the key allows.
    response = await client.post("/v1/listings", json=listing(domain="astrology"), headers=anywhere)
    assert_problem(response, 422, field="domain", rule="domain.catalogue")


async def test_admin_key_is_not_an_authority_of_others(client, make_agency):
    tax = await make_agency()
    listing_id = (await create(client, tax, listing()))["listing_id"]
    response = await client.post(
        f"/v1/listings/{listing_id}/delist", json={"reason": "revoked", "note": "n"}, headers=ADMIN
    )
    assert_problem(response, 403, rule="authority.owner")
