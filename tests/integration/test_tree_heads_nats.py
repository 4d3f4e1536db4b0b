"""Signed tree heads reach NATS: every head the hub signs lands in its own JetStream stream,
outside the relay's subjects, once, and verifies with the hub's public key."""

from __future__ import annotations

import asyncio
import dataclasses

import msgspec
import nats
import pytest
from litestar.testing import AsyncTestClient

from hub.api.app import create_app
from projections.merkle import NoteVerifier, verify_checkpoint

LISTING = {
    "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme"},
    "list": "blacklist",
    "domain": "taxation",
    "severity": "severe",
    "intent": "intentional",
    "basis": {"decision_no": "D-H", "legal_basis": "law", "facts": "facts"},
    "region": "320100",
    "effective_from": "2025-03-01T00:00:00+08:00",
    "effective_until": "2026-03-01T00:00:00+08:00",
}


@pytest.fixture(name="nats_settings")
def fx_nats_settings(settings, nats_url, stream_prefix):
    return dataclasses.replace(
        settings,
        nats_url=nats_url,
        nats_stream=stream_prefix,
        nats_subject_prefix=stream_prefix.lower(),
        tree_head_every_events=1,
        tree_head_every_seconds=0.1,
    )


async def test_signed_heads_are_published_on_nats(nats_settings, clock, nats_url, stream_prefix):
    async with AsyncTestClient(create_app(nats_settings, clock)) as client:
        admin = {"Authorization": "Bearer hub_admin_test_key"}
        made = await client.post(
            "/v1/agencies",
            json={
                "code": "320000-tax",
                "name": "t",
                "scopes": ["publish", "audit"],
                "domains": ["taxation"],
            },
            headers=admin,
        )
        tax = {"Authorization": f"Bearer {made.json()['api_key']}"}
        created = await client.post("/v1/listings", json=LISTING, headers=tax)
        assert created.status_code == 201, created.text
        key = (await client.get("/v1/audit/public-key", headers=tax)).json()
        head = {"tree_size": 0}
        for _ in range(200):
            head = (await client.get("/v1/audit/tree-head", headers=tax)).json()
            if head["tree_size"] >= created.json()["position"]:
                break
            await asyncio.sleep(0.05)
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            stream = f"{stream_prefix}_TREE_HEADS"
            messages = []
            for _ in range(100):
                try:
                    info = await js.stream_info(stream)
                except nats.js.errors.NotFoundError:  # the first head creates it
                    await asyncio.sleep(0.05)
                    continue
                if info.state.messages:
                    last = await js.get_last_msg(stream, f"{stream_prefix.lower()}-audit.tree_head")
                    messages = [msgspec.json.decode(last.data)]
                    if messages[0]["tree_size"] >= head["tree_size"]:
                        break
                await asyncio.sleep(0.05)
            assert messages, "no tree head reached NATS"
            published = messages[0]
            verifier = NoteVerifier.from_key(key["key"])
            checkpoint = verify_checkpoint(published["checkpoint"], verifier, origin=key["origin"])
            assert checkpoint.size == published["tree_size"] >= head["tree_size"]
            assert checkpoint.root.hex() == published["root_hash"]
            await js.delete_stream(stream)
        finally:
            await nc.close()
