"""Key lookups are cached (by digest, and a known key by its header) yet a revoked key stops
working within CACHE_SECONDS of the lookup that found it, and an unknown key never passes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import hub.agencies
from hub.agencies import ADMIN, Agencies, key_hash
from hub.errors import Unauthenticated


class FakePool:
    """The agencies table as a dict of key hash to row; counts the reads."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.reads = 0

    async def fetchrow(self, _sql: str, digest: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.rows.get(digest)


async def test_a_revoked_key_stops_within_the_cache_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub.agencies, "CACHE_SECONDS", 0.2)
    pool = FakePool()
    agencies = Agencies(pool, "admin-key")  # type: ignore[arg-type]
    key = "hub_test"
    pool.rows[key_hash(key)] = {
        "code": "a1",
        "name": "A",
        "scopes": ["check"],
        "domains": ["taxation"],
    }
    header = f"Bearer {key}"
    assert (await agencies.authenticate(header)).code == "a1"
    assert (await agencies.authenticate(header)).code == "a1"
    assert pool.reads == 1  # remembered
    assert agencies.known(header) is await agencies.authenticate(header)  # the sync lookup
    del pool.rows[key_hash(key)]  # revoked
    await asyncio.sleep(0.25)
    assert agencies.known(header) is None  # past the cache time: ask authenticate
    with pytest.raises(Unauthenticated):
        await agencies.authenticate(header)
    assert agencies.known(header) is None
    with pytest.raises(Unauthenticated):  # and stays refused
        await agencies.authenticate(header)


async def test_unknown_keys_and_the_admin() -> None:
    pool = FakePool()
    agencies = Agencies(pool, "admin-key")  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await agencies.authenticate("Bearer hub_nobody")
        with pytest.raises(Unauthenticated):
            await agencies.authenticate(None)
        with pytest.raises(Unauthenticated):
            await agencies.authenticate("Basic abc")
        assert await agencies.authenticate("Bearer admin-key") is ADMIN
        assert agencies.known("Bearer admin-key") is ADMIN
        for refused in ("Bearer hub_nobody", None, "Basic abc"):
            assert agencies.known(refused) is None  # a refusal is never known
    assert pool.reads == 1  # the unknown key's refusal is cached too


async def test_remembered_headers_are_forgotten_after_the_cache_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key seen once (then revoked, say) does not stay in memory until it comes again."""
    monkeypatch.setattr(hub.agencies, "CACHE_SECONDS", 0.1)
    pool = FakePool()
    agencies = Agencies(pool, "admin-key")  # type: ignore[arg-type]
    for key in ("hub_one", "hub_two"):
        pool.rows[key_hash(key)] = {"code": key, "name": "", "scopes": [], "domains": []}
    await agencies.authenticate("Bearer hub_one")
    await asyncio.sleep(0.15)
    await agencies.authenticate("Bearer hub_two")  # remembering another sweeps the stale
    assert list(agencies._known) == ["Bearer hub_two"]  # what memory holds
