"""The audit tree and the bitemporal history are read models like the others: a replay from
position 0 (in a scratch schema, batch boundaries elsewhere) rebuilds them byte for byte."""

from __future__ import annotations

import asyncio
import random

import asyncpg

from projections.audit import AuditProjection
from projections.history import HistoryProjection
from projections.replay import replay_digest, snapshot
from schemas.identifiers import make_uscc

SUBJECTS = ["uscc:91350100M000100Y43", "uscc:" + make_uscc(random.Random(2))]


async def _reached(
    conn: asyncpg.Connection, name: str, position: int, within: float = 10.0
) -> None:
    """Wait until projection `name` has applied `position` (or `within` seconds pass)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        found = await conn.fetchval(
            "SELECT position FROM projection_positions WHERE name = $1", name
        )
        if found is not None and found >= position:
            return
        await asyncio.sleep(0.02)


def listing(n: int) -> dict:
    return {
        "subject": {"id": SUBJECTS[n % 2], "name": "Acme"},
        "list": "blacklist",
        "domain": "taxation",
        "severity": "severe",
        "intent": "intentional",
        "basis": {"decision_no": f"Y-{n}", "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
    }


async def test_replay_rebuilds_tree_and_history(client, make_agency, db):
    tax = await make_agency()
    ids = []
    for n in range(12):
        created = await client.post("/v1/listings", json=listing(n), headers=tax)
        assert created.status_code == 201, created.text
        ids.append(created.json()["listing_id"])
    amended = await client.post(
        f"/v1/listings/{ids[0]}/amend",
        json={"note": "n", "severity": "general", "applies_from": "2025-01-01T00:00:00Z"},
        headers=tax,
    )
    done = await client.post(
        f"/v1/listings/{ids[1]}/delist", json={"reason": "revoked", "note": "n"}, headers=tax
    )
    assert amended.status_code == 200, amended.text
    assert done.status_code == 200, done.text
    position = done.json()["position"]
    profile = await client.get(f"/v1/subjects/{SUBJECTS[0]}?min_position={position}", headers=tax)
    assert profile.status_code == 200
    for projection in (AuditProjection(), HistoryProjection()):
        conn = await asyncpg.connect(db.url, server_settings={"search_path": db.schema})
        try:  # min_position above waited for the listings projection; these follow on their own
            await _reached(conn, projection.name, position)
            live_position, live = await snapshot(conn, projection)
        finally:
            await conn.close()
        assert live_position >= position
        rebuilt = await replay_digest(db.url, db.schema, projection, live_position, batch_size=5)
        assert rebuilt == live, projection.name
