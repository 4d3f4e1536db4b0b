"""Helpers for the relay, cluster and client tests: listing bodies, a hub with a relay, reading
a stream through a durable consumer, and comparing it with the log."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from hub.settings import Settings
from schemas.identifiers import make_uscc
from schemas.log import event_id

ADMIN_KEY = "hub_admin_test_key"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
_numbers = itertools.count(1)
_rng = random.Random(4)


def listing_body(*, subject: str | None = None, list_name="blacklist", region="320100"):
    n = next(_numbers)
    return {
        "subject": {"id": subject or f"uscc:{make_uscc(_rng)}", "name": f"Subject {n}"},
        "list": list_name,
        "domain": "taxation",
        "severity": "severe" if list_name != "redlist" else None,
        "intent": "intentional" if list_name != "redlist" else None,
        "basis": {"decision_no": f"苏税罚[2025]R{n}号", "legal_basis": "law", "facts": "facts"},
        "region": region,
        "effective_from": "2025-03-01T00:00:00+08:00",
        "effective_until": "2026-03-01T00:00:00+08:00",
    }


def relay_settings(db, nats_url: str | None, prefix: str, **changes) -> Settings:
    values = {
        "database_url": db.url,
        "database_schema": db.schema,
        "admin_key": ADMIN_KEY,
        "nats_url": nats_url,
        "nats_stream": prefix,
        "nats_subject_prefix": prefix.lower(),
        "run_scheduler": False,
    }
    values.update(changes)
    return Settings(**values)


async def make_agency(client, code="320000-tax", scopes=("publish", "check", "subscribe")):
    response = await client.post(
        "/v1/agencies",
        json={"code": code, "name": code, "scopes": list(scopes), "domains": ["taxation"]},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['api_key']}"}


async def post_listings(client, headers, n, *, concurrency=16, **body):
    """Create `n` listings through the API; return their positions."""
    positions: list[int] = []

    async def one() -> None:
        response = await client.post("/v1/listings", json=listing_body(**body), headers=headers)
        assert response.status_code == 201, response.text
        positions.append(response.json()["position"])

    for start in range(0, n, concurrency):
        await asyncio.gather(*(one() for _ in range(min(concurrency, n - start))))
    return positions


@dataclass(frozen=True)
class Received:
    seq: int
    subject: str
    position: int
    msg_id: str
    data: bytes
    headers: dict


async def drain(nats_url, stream, *, durable="audit", filter_subject=None, settle=1.0):
    """Everything a durable pull consumer receives until nothing is pending; acked one by one."""
    nc = await nats.connect(servers=nats_url.split(","))
    try:
        js = nc.jetstream(timeout=10)
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            filter_subject=filter_subject,
        )
        for attempt in range(4):  # a cluster that just lost a node may be electing leaders
            try:
                await js.add_consumer(stream, config)
                break
            except (nats.errors.TimeoutError, TimeoutError):
                if attempt == 3:
                    raise
        sub = await js.pull_subscribe_bind(durable, stream)
        got: list[Received] = []
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < settle:
            try:
                msgs = await sub.fetch(500, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            idle_since = time.monotonic()
            for msg in msgs:
                headers = dict(msg.headers or {})
                got.append(
                    Received(
                        msg.metadata.sequence.stream,
                        msg.subject,
                        int(headers["Hub-Position"]),
                        headers["Nats-Msg-Id"],
                        msg.data,
                        headers,
                    )
                )
                await msg.ack()
        return got
    finally:
        await nc.close()


async def log_ids(db) -> list[tuple[int, str]]:
    """(position, event id) of every event in the log, in order."""
    conn = await asyncpg.connect(db.url, server_settings={"search_path": db.schema})
    try:
        rows = await conn.fetch(
            "SELECT notification_id, originator_id, originator_version FROM credit_events "
            "ORDER BY notification_id"
        )
    finally:
        await conn.close()
    return [(r[0], event_id(r[1], r[2])) for r in rows]


def assert_exactly_once_in_order(received: list[Received], log: list[tuple[int, str]]) -> None:
    assert [(r.position, r.msg_id) for r in received] == log
    seqs = [r.seq for r in received]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no gap, no repeat


async def wait_until(predicate, within: float, what: str, step: float = 0.05):
    deadline = time.monotonic() + within
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(step)


class StreamWatch:
    """The Hub-Position of a stream's last message (0 when empty or absent), on one connection."""

    def __init__(self, nats_url, stream):
        self.nats_url, self.stream, self.nc = nats_url, stream, None

    async def position(self) -> int:
        try:
            if self.nc is None or not self.nc.is_connected:
                self.nc = await nats.connect(
                    servers=self.nats_url.split(","), allow_reconnect=False, connect_timeout=2
                )
            js = self.nc.jetstream(timeout=2)
            info = await js.stream_info(self.stream)
            if info.state.messages == 0:
                return 0
            msg = await js.get_msg(self.stream, seq=info.state.last_seq)
            return int(msg.headers["Hub-Position"])
        except (nats.errors.Error, TimeoutError):
            return 0

    async def close(self):
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()


def start_relay_process(db, nats_url: str, prefix: str, log_path, *, replicas=1, batch=1000):
    """`python -m adapters.relay` as its own process, configured by environment."""
    env = {
        **os.environ,
        "HUB_DATABASE_URL": db.url,
        "HUB_DATABASE_SCHEMA": db.schema,
        "HUB_NATS_URL": nats_url,
        "HUB_NATS_STREAM": prefix,
        "HUB_NATS_SUBJECT_PREFIX": prefix.lower(),
        "HUB_NATS_REPLICAS": str(replicas),
        "HUB_RELAY_BATCH_SIZE": str(batch),
    }
    with Path(log_path).open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "adapters.relay"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
