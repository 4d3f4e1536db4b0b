"""A first story through the API: an agency lists a subject and reads it back."""

from __future__ import annotations

import json


async def test_listing_story(client, make_agency):
    tax = await make_agency()
    body = {
        "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme"},
        "list": "blacklist",
        "domain": "taxation",
        "severity": "severe",
        "intent": "intentional",
        "basis": {"decision_no": "D-1", "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
    }
    created = await client.post("/v1/listings", json=body, headers=tax)
    assert created.status_code == 201, created.text
    position = created.json()["position"]
    profile = await client.get(
        f"/v1/subjects/uscc:91350100M000100Y43?min_position={position}", headers=tax
    )
    assert profile.status_code == 200
    assert [item["decision_no"] for item in profile.json()["active"]] == ["D-1"]


async def test_request_log_lines_name_the_request_agency_and_listing(client, make_agency, capfd):
    tax = await make_agency()
    body = {
        "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme"},
        "list": "blacklist",
        "domain": "taxation",
        "severity": "severe",
        "intent": "intentional",
        "basis": {"decision_no": "D-LOG", "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
    }
    created = await client.post("/v1/listings", json=body, headers=tax)
    assert created.status_code == 201
    lines = [
        json.loads(line)
        for line in capfd.readouterr().out.splitlines()
        if line.startswith("{") and '"event":"request"' in line.replace(" ", "")
    ]
    posted = [line for line in lines if line.get("path") == "/v1/listings"]
    assert posted, lines
    assert posted[-1]["agency"] == "320000-tax"
    assert posted[-1]["listing_id"] == created.json()["listing_id"]
    assert posted[-1]["request_id"] == created.headers["x-request-id"]
