"""Input PostgreSQL text cannot hold (NUL) is refused at the door, with the field named, so it
never reaches a read model or the usage log; a min_position beyond the log is a 422."""

from __future__ import annotations

LISTING = {
    "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme"},
    "list": "blacklist",
    "domain": "taxation",
    "severity": "severe",
    "intent": "intentional",
    "basis": {"decision_no": "D-NUL", "legal_basis": "law", "facts": "facts"},
    "region": "320100",
    "effective_from": "2025-03-01T00:00:00+08:00",
    "effective_until": "2026-03-01T00:00:00+08:00",
}


def _problem(response, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["field"] == field


async def test_nul_in_a_body_is_refused_naming_the_field(client, make_agency):
    tax = await make_agency()
    body = LISTING | {"subject": {"id": LISTING["subject"]["id"], "name": "Ac\u0000me"}}
    _problem(await client.post("/v1/listings", json=body, headers=tax), 400, "subject.name")
    check = {"subject_id": "uscc:91350100M000100Y43", "matter": "bidding", "purpose": "a\u0000"}
    _problem(await client.post("/v1/checks", json=check, headers=tax), 400, "purpose")
    # nothing was written, and the read models still follow the log
    fine = await client.post("/v1/listings", json=LISTING, headers=tax)
    assert fine.status_code == 201, fine.text
    position = fine.json()["position"]
    profile = await client.get(
        f"/v1/subjects/uscc:91350100M000100Y43?min_position={position}", headers=tax
    )
    assert [item["decision_no"] for item in profile.json()["active"]] == ["D-NUL"]


async def test_nul_in_a_query_is_refused(client):
    _problem(await client.get("/public/search?name=Ac%00me"), 400, "name")


async def test_min_position_beyond_the_log_is_422(client, make_agency):
    tax = await make_agency()
    response = await client.get(
        "/v1/subjects/uscc:91350100M000100Y43?min_position=999999999", headers=tax
    )
    _problem(response, 422, "min_position")
    assert response.json()["rule"] == "min_position.beyond_log"


async def test_check_min_position_beyond_the_log_is_422(client, make_agency):
    tax = await make_agency()
    check = {
        "subject_id": "uscc:91350100M000100Y43",
        "matter": "bidding",
        "purpose": "bid",
        "min_position": 999999999,
    }
    response = await client.post("/v1/checks", json=check, headers=tax)
    _problem(response, 422, "min_position")


async def test_fast_routes_refuse_an_oversize_body_like_the_framework(client, make_agency):
    tax = await make_agency()
    huge = b'{"items": [' + b" " * 10_000_001 + b"]}"
    for path in ("/v1/checks/batch", "/v1/listings", "/v1/checks"):
        response = await client.post(
            path, content=huge, headers=tax | {"content-type": "application/json"}
        )
        assert response.status_code == 413, (path, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_check_fast_path_decodes_as_strictly_as_the_normal_route(client, make_agency):
    tax = await make_agency()
    lax = {"subject_id": "uscc:91350100M000100Y43", "matter": "bidding", "purpose": "p"}
    _problem(
        await client.post("/v1/checks", json=lax | {"min_position": "5"}, headers=tax),
        400,
        "min_position",
    )
    batch = {"items": [lax], "min_position": "5"}
    _problem(await client.post("/v1/checks/batch", json=batch, headers=tax), 400, "min_position")
