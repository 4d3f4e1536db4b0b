"""The audit API: signed tree heads verify with the published key, inclusion proofs verify
against the signed root, consistency proofs link stored heads, bad parameters are named."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from hub.audit import origin_for
from hub.settings import Settings
from projections.merkle import (
    NoteSigner,
    NoteVerifier,
    hash_from_hex,
    leaf_hash,
    verify_checkpoint,
    verify_consistency,
    verify_inclusion,
)

KEY = NoteSigner.generate(origin_for("320000")).private_key()


@pytest.fixture(name="settings")
def fx_settings(db) -> Settings:
    return Settings(
        database_url=db.url,
        database_schema=db.schema,
        admin_key="hub_admin_test_key",
        log_signing_key=KEY,
        tree_head_every_events=3,
        tree_head_every_seconds=1,
    )


def listing(n: int) -> dict:
    return {
        "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme"},
        "list": "blacklist",
        "domain": "taxation",
        "severity": "severe",
        "intent": "intentional",
        "basis": {"decision_no": f"D-{n}", "legal_basis": "law", "facts": "facts"},
        "region": "320100",
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
    }


async def _heads_until(client, headers, size: int) -> dict:
    for _ in range(400):
        head = (await client.get("/v1/audit/tree-head", headers=headers)).json()
        if head["tree_size"] >= size:
            return head
        await asyncio.sleep(0.025)
    raise AssertionError(f"no tree head of size {size}: {head}")


async def test_signed_heads_and_proofs(client, make_agency):
    tax = await make_agency()
    key = (await client.get("/v1/audit/public-key", headers=tax)).json()
    assert key["origin"] == "credit-hub.320000/log"
    verifier = NoteVerifier.from_key(key["key"])

    positions = []
    for n in range(7):
        created = await client.post("/v1/listings", json=listing(n), headers=tax)
        assert created.status_code == 201, created.text
        positions.append(created.json()["position"])
    first = await _heads_until(client, tax, 3)
    # the catalogue's seed events come first: the last listing is leaf positions[-1] - 1
    last = await _heads_until(client, tax, positions[-1])

    for head in (first, last):
        checkpoint = verify_checkpoint(head["checkpoint"], verifier, origin=key["origin"])
        assert checkpoint.size == head["tree_size"]
        assert checkpoint.root.hex() == head["root_hash"]

    latest = await client.get(f"/v1/audit/proof/inclusion?position={positions[0]}", headers=tax)
    assert latest.json()["tree_size"] >= last["tree_size"]  # default: the latest signed head
    for position in positions:
        url = f"/v1/audit/proof/inclusion?position={position}&tree_size={last['tree_size']}"
        answer = await client.get(url, headers=tax)
        assert answer.status_code == 200, answer.text
        proof = answer.json()
        assert proof["tree_size"] == last["tree_size"]
        entry = base64.b64decode(proof["entry"])
        assert json.loads(entry)["position"] == position
        assert leaf_hash(entry).hex() == proof["leaf_hash"]
        verify_inclusion(
            leaf_hash(entry),
            proof["leaf_index"],
            proof["tree_size"],
            [hash_from_hex(h) for h in proof["audit_path"]],
            hash_from_hex(last["root_hash"]),
        )

    consistency = (
        await client.get(
            f"/v1/audit/proof/consistency?first={first['tree_size']}&second={last['tree_size']}",
            headers=tax,
        )
    ).json()
    verify_consistency(
        first["tree_size"],
        last["tree_size"],
        hash_from_hex(first["root_hash"]),
        hash_from_hex(last["root_hash"]),
        [hash_from_hex(h) for h in consistency["proof"]],
    )


async def test_bad_parameters_are_named(client, make_agency):
    tax = await make_agency()
    created = await client.post("/v1/listings", json=listing(1), headers=tax)
    position = created.json()["position"]
    await _heads_until(client, tax, position)  # the listing is in the tree (no gaps here)

    async def problem(url: str, status: int) -> dict:
        response = await client.get(url, headers=tax)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        return response.json()

    assert (await problem("/v1/audit/proof/inclusion", 400))["field"] == "position"
    assert (await problem("/v1/audit/proof/inclusion?position=x", 400))["field"] == "position"
    assert (await problem("/v1/audit/proof/inclusion?position=0", 400))["field"] == "position"
    beyond = await problem(f"/v1/audit/proof/inclusion?position={position + 5}", 404)
    assert beyond["rule"] == "audit.beyond_tree"
    big = await problem(f"/v1/audit/proof/inclusion?position={position}&tree_size=99", 404)
    assert (big["field"], big["rule"]) == ("tree_size", "audit.beyond_tree")
    assert (await problem("/v1/audit/proof/consistency?first=2&second=1", 400))["field"] == "first"
    assert (await problem("/v1/audit/proof/consistency?first=1", 400))["field"] == "second"
    far = await problem("/v1/audit/proof/consistency?first=1&second=50", 404)
    assert (far["field"], far["rule"]) == ("second", "audit.beyond_tree")
    check_only = await make_agency("320000-check", scopes=("check",))
    response = await client.get("/v1/audit/tree-head", headers=check_only)
    assert response.status_code == 403
