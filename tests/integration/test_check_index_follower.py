"""The check index follows the log: whatever happens to listings, the live index equals one
loaded from the listings read model and one built by following the log from position 0."""

from __future__ import annotations

import itertools
import random

import asyncpg

from projections.checkindex import RECORD, CheckIndex
from projections.checkindex_follower import IndexFollower
from schemas.identifiers import make_uscc

_numbers = itertools.count(1)


def listing(subject, list_name="blacklist", **changes):
    body = {
        "subject": {"id": subject, "name": "Acme"},
        "list": list_name,
        "domain": "taxation",
        "basis": {"decision_no": f"D-{next(_numbers)}", "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
    }
    if list_name != "redlist":
        body.update(severity="severe", intent="intentional")
    body.update(changes)
    return body


async def test_live_index_equals_loaded_and_replayed(client, make_agency, settings):
    tax = await make_agency()
    rng = random.Random(5)
    subjects = [f"uscc:{make_uscc(rng)}" for _ in range(6)]
    ids = []
    for i, subject in enumerate(subjects):
        for list_name in ("blacklist", "redlist"):
            extra = {"notice_days": 5} if i % 2 else {}
            response = await client.post(
                "/v1/listings", json=listing(subject, list_name, **extra), headers=tax
            )
            assert response.status_code == 201, response.text
            ids.append(response.json()["listing_id"])

    async def post(path, body):
        response = await client.post(f"/v1/listings/{path}", json=body, headers=tax)
        assert response.status_code in (200, 201), response.text
        return response.json()["position"]

    await post(f"{ids[2]}/objections", {"grounds": "不服"})
    await post(f"{ids[2]}/objections/1/resolve", {"upheld": False, "answer": "维持"})
    await post(f"{ids[6]}/objections", {"grounds": "不服"})
    await post(
        f"{ids[0]}/amend",
        {"note": "更正", "severity": "general", "effective_until": "2025-12-01T00:00:00+08:00"},
    )
    await post(f"{ids[1]}/delist", {"reason": "revoked", "note": "撤销"})
    await post(f"{ids[4]}/delist", {"reason": "repaired", "note": "修复"})
    await post(f"{ids[10]}/objections", {"grounds": "不服"})
    last = await post(f"{ids[10]}/objections/1/resolve", {"upheld": True, "answer": "成立"})

    # the app runs on the test client's own event loop: wait through the API
    check = {"subject_id": subjects[0], "matter": "bidding", "purpose": "p", "min_position": last}
    assert (await client.post("/v1/checks", json=check, headers=tax)).status_code == 200
    profile = await client.get(f"/v1/subjects/{subjects[0]}?min_position={last}", headers=tax)
    assert profile.status_code == 200
    hub = client.app.state.hub
    live = hub.checks.index

    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=1,
        max_size=2,
        server_settings={"search_path": settings.database_schema},
    )
    try:
        loaded = IndexFollower(pool, CheckIndex())
        await loaded.load()
        await loaded.catch_up()
        replayed = IndexFollower(pool, CheckIndex())
        await replayed.catch_up()
    finally:
        await pool.close()

    def readable(index):
        return {
            key: sorted(
                (
                    e[0],
                    e[1],
                    e[2],
                    e[3],
                    index.domains.name(e[4]),
                    index.regions.name(e[5]),
                    e[6],
                    e[7],
                )
                for e in RECORD.iter_unpack(packed)
            )
            for key, packed in index.subjects.items()
        }

    assert readable(live) == readable(loaded.index) == readable(replayed.index)
    assert live.listings == 12 - 3
    assert loaded.position == replayed.position == hub.checks.follower.position
    assert (
        loaded.catalogue.version
        == replayed.catalogue.version
        == hub.checks.follower.catalogue.version
    )
    assert loaded.catalogue.measures == replayed.catalogue.measures
