"""Shared fixtures: one PostgreSQL and one NATS per session, a schema and a stream prefix per test.

Set ``HUB_TEST_DATABASE_URL`` / ``HUB_TEST_NATS_URL`` to run against servers you already have;
otherwise embedded ones are started in a temporary directory and stopped at the end.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
import pytest

from ops.embedded import EmbeddedNats, EmbeddedPostgres, free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@dataclass(frozen=True, slots=True)
class DbTarget:
    """Where a test keeps its rows: the server and a schema no other test sees."""

    url: str
    schema: str


async def _execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(name="pg_url", scope="session")
def fx_pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("HUB_TEST_DATABASE_URL"):
        yield url
        return
    with EmbeddedPostgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server.url


@pytest.fixture(name="db")
async def fx_db(pg_url: str) -> AsyncIterator[DbTarget]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    await _execute(pg_url, f'CREATE SCHEMA "{schema}"')
    try:
        yield DbTarget(pg_url, schema)
    finally:
        await _execute(pg_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(name="nats_url", scope="session")
def fx_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("HUB_TEST_NATS_URL"):
        yield url
        return
    with EmbeddedNats(tmp_path_factory.mktemp("nats"), free_port()) as server:
        yield server.url


@pytest.fixture(name="stream_prefix")
def fx_stream_prefix() -> str:
    return f"T{uuid.uuid4().hex[:10]}"
