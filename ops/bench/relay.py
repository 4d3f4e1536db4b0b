"""The JetStream relay against raw nats-py, and listing-to-subscriber latency, in one run.

    python -m ops.bench.relay [--dsn URL] [--nats URL] [--events 20000] [--listings 200]

Throughput: a fresh schema gets `--events` log events by COPY (four registrations to one
delisting, so the relay also looks listings up). The baseline publishes the very messages the
relay would send (subjects, CloudEvents payloads, the same four headers), encoded beforehand, with
raw `js.publish_async` (at most 4,000 in flight, nats-py's default) and waits for every ack.
The relay then publishes the same log from PostgreSQL to an empty stream: reading, encoding,
acks awaited before its position advances. The relay sends the same JetStream publishes (one
ack per message, each checked) but gathers acks per batch rather than through publish_async's
per-message futures (`adapters.relay_stream.Publisher`), so it may come out above 1. The
figure is relay/raw (target at least 0.7); each side runs `--rounds` times against a fresh
stream and its best run counts.

Latency: the hub as users run it (`hub serve`, relay in process, LISTEN/NOTIFY to wake it)
takes `--listings` listings one after another; a JetStream ordered consumer on the stream
notes when each arrives. The latency is arrival minus the moment the 201 came back
(target p99 at most 100 ms). Streams and schemas are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import nats
from nats.js.api import StorageType, StreamConfig

from adapters import cloudevents as ce
from adapters.relay import Relay, RelayConfig
from adapters.relay_log import LogReader
from ops.bench.listings import ADMIN_KEY, serve_hub
from schemas.codec import encode_state

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_NATS = "nats://127.0.0.1:4222"
LISTING = "hub.credit.domainmodel:Listing"
Message = tuple[str, bytes, dict[str, str]]
DDL = """
CREATE TABLE credit_events (
    originator_id uuid NOT NULL, originator_version bigint NOT NULL, topic text NOT NULL,
    state bytea NOT NULL, notification_id bigserial,
    PRIMARY KEY (originator_id, originator_version));
CREATE UNIQUE INDEX ON credit_events (notification_id ASC);
"""


def _records(n: int) -> list[tuple[uuid.UUID, int, str, bytes]]:
    """`n` events: registrations, and every fifth a delisting of an earlier one."""
    now = datetime.now(UTC)
    rows: list[tuple[uuid.UUID, int, str, bytes]] = []
    ids: list[uuid.UUID] = []
    for i in range(n):
        if i % 5 == 4:
            state = {"timestamp": now, "reason": "repaired", "note": "n", "effective_at": now}
            rows.append((ids[i // 5], 2, f"{LISTING}.Delisted", encode_state(state)))
            continue
        ids.append(uuid.uuid4())
        state = {
            "timestamp": now, "originator_topic": LISTING,
            "subject_id": f"uscc:9132010{i:010d}X", "subject_name": f"Subject {i}",
            "list": ("blacklist", "watchlist", "market_ban", "redlist")[i % 4],
            "domain": "taxation", "severity": "severe", "intent": "intentional",
            "decision_no": f"B-{i}", "legal_basis": "税收征收管理法", "facts": "虚开发票",
            "region": f"3201{i % 20:02d}", "authority": "320000-tax",
            "effective_from": now, "effective_until": now + timedelta(days=365),
            "notice_until": None, "digest": "0" * 64,
            "origin_hub": None, "origin_position": None,
        }  # fmt: skip
        rows.append((ids[-1], 1, f"{LISTING}.Registered", encode_state(state)))
    return rows


async def _seed(dsn: str, schema: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"; {DDL}')
        await conn.copy_records_to_table(
            "credit_events",
            records=_records(n),
            columns=["originator_id", "originator_version", "topic", "state"],
            schema_name=schema,
        )
        await conn.execute("VACUUM ANALYZE credit_events")
    finally:
        await conn.close()


async def _messages(dsn: str, schema: str, prefix: str) -> list[Message]:
    """Every event as the relay would send it, read and encoded before the clock starts."""
    pool = await asyncpg.create_pool(
        dsn, server_settings={"search_path": schema}, min_size=1, max_size=2
    )
    reader, after = LogReader(pool), 0
    out: list[Message] = []
    try:
        while batch := await reader.read(after, 5000):
            for event, context in batch:
                payload = ce.encode(ce.to_cloudevent(event, "/hubs/320000", context))
                headers = {
                    "Nats-Msg-Id": event.id,
                    "Hub-Position": str(event.position),
                    "Nats-Expected-Last-Sequence": str(len(out)),  # into an empty stream
                    "Content-Type": ce.CONTENT_TYPE,
                }
                out.append((ce.subject_for(prefix, event, context), payload, headers))
            after = batch[-1][0].position
    finally:
        await pool.close()
    return out


async def _raw(nats_url: str, name: str, messages: list[Message]) -> tuple[float, float]:
    """(messages per second, CPU seconds of this process per message)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name=name, subjects=[f"{name.lower()}.>"], storage=StorageType.FILE)
        )
        started, cpu = time.perf_counter(), time.process_time()
        for subject, payload, headers in messages:
            await js.publish_async(subject, payload, headers=headers)
        await js.publish_async_completed()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        await js.delete_stream(name)
    finally:
        await nc.close()
    return len(messages) / elapsed, cpu / len(messages)


async def _relay(dsn: str, source: str, nats_url: str, name: str, head: int) -> tuple[float, float]:
    """(events per second, CPU seconds of this process per event): the relay starts on an
    empty log (its stream made, its lock held), the events of `source` land in one
    transaction, and the clock runs from its wake-up to the last ack."""
    schema = f"{source}_{name.lower()}"
    conn = await asyncpg.connect(dsn)
    await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"; {DDL}')
    config = RelayConfig(dsn, nats_url, database_schema=schema, stream=name,
                         subject_prefix=name.lower(), poll_seconds=3600)  # fmt: skip
    relay, stop = Relay(config), asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    nc = await nats.connect(nats_url)
    try:
        await _wait_stream(nc, name)
        await asyncio.sleep(0.3)  # idle: waiting for a wake-up
        await conn.execute(f'INSERT INTO credit_events SELECT * FROM "{source}".credit_events')
        await conn.execute("VACUUM ANALYZE credit_events")  # as a long-lived table would be
        started, cpu = time.perf_counter(), time.process_time()
        relay.wakeup.set()
        while relay.position < head:
            if task.done():
                task.result()
            await asyncio.sleep(0.001)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        stop.set()
        await task
        info = await nc.jetstream().stream_info(name)
        if info.state.messages != head:
            raise RuntimeError(f"the relay stored {info.state.messages} of {head} events")
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
    return head / elapsed, cpu / head


async def throughput(dsn: str, nats_url: str, events: int, rounds: int) -> dict[str, Any]:
    schema, tag = f"bench_relay_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:6].upper()
    await _seed(dsn, schema, events)
    try:
        raw_rates: list[tuple[float, float]] = []
        relay_rates: list[tuple[float, float]] = []
        for r in range(rounds):
            name = f"BRAW{tag}{r}"
            raw_rates.append(await _raw(nats_url, name, await _messages(dsn, schema, name.lower())))
            relay_rates.append(await _relay(dsn, schema, nats_url, f"BREL{tag}{r}", events))
    finally:
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
    raw, relayed = max(r for r, _ in raw_rates), max(r for r, _ in relay_rates)
    return {
        "raw_per_s": round(raw),
        "relay_per_s": round(relayed),
        "ratio": round(relayed / raw, 3),
        "raw_cpu_us": round(min(c for _, c in raw_rates) * 1e6, 1),
        "relay_cpu_us": round(min(c for _, c in relay_rates) * 1e6, 1),
        "rounds": [
            (round(a[0]), round(b[0]), round(b[0] / a[0], 2))
            for a, b in zip(raw_rates, relay_rates, strict=True)
        ],
    }


async def latency(dsn: str, nats_url: str, listings: int) -> dict[str, Any]:
    schema, name = f"bench_lat_{uuid.uuid4().hex[:8]}", f"BLAT{uuid.uuid4().hex[:6].upper()}"
    env = {"HUB_NATS_URL": nats_url, "HUB_NATS_STREAM": name,
           "HUB_NATS_SUBJECT_PREFIX": name.lower(), "HUB_RUN_SCHEDULER": "false"}  # fmt: skip
    arrived: dict[int, float] = {}
    nc = await nats.connect(nats_url)
    try:
        async with serve_hub(dsn, schema, env) as (port, _):
            http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
            admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
            made = await http.post("/v1/agencies", headers=admin, json={
                "code": "320000-tax", "name": "bench", "scopes": ["publish"],
                "domains": ["taxation"]})  # fmt: skip
            key = {"Authorization": f"Bearer {made.json()['api_key']}"}
            await _wait_stream(nc, name)

            async def note(msg: Any) -> None:
                arrived[int(msg.headers["Hub-Position"])] = time.perf_counter()

            sub = await nc.jetstream().subscribe(
                f"{name.lower()}.>", cb=note, ordered_consumer=True
            )
            answered: dict[int, float] = {}
            now = datetime.now(UTC)
            for i in range(listings):
                body = {
                    "subject": {"id": "uscc:91350100M000100Y43", "name": "Acme"},
                    "list": "blacklist", "domain": "taxation", "severity": "severe",
                    "intent": "intentional", "region": "320100",
                    "basis": {"decision_no": f"L-{i}", "legal_basis": "law", "facts": "facts"},
                    "effective_from": now.isoformat(),
                    "effective_until": (now + timedelta(days=300)).isoformat(),
                }  # fmt: skip
                response = await http.post("/v1/listings", json=body, headers=key)
                answered[response.json()["position"]] = time.perf_counter()
                await asyncio.sleep(0.01)
            deadline = time.monotonic() + 10
            while len(arrived) < listings and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await sub.unsubscribe()
            await http.aclose()
        await nc.jetstream().delete_stream(name)
    finally:
        await nc.close()
        conn = await asyncpg.connect(dsn)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
    waits = sorted(max(0.0, arrived.get(p, float("inf")) - t) * 1000 for p, t in answered.items())
    return {"listings": listings, "received": sum(p in arrived for p in answered),
            "p50_ms": round(waits[len(waits) // 2], 2),
            "p99_ms": round(waits[min(len(waits) - 1, int(len(waits) * 0.99))], 2),
            "max_ms": round(waits[-1], 2)}  # fmt: skip


async def _wait_stream(nc: Any, name: str) -> None:
    for _ in range(200):
        with contextlib.suppress(Exception):
            await nc.jetstream().stream_info(name)
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the hub's relay never created stream {name}")


def main(args: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.relay", description=__doc__)
    parser.add_argument("--dsn", default=os.environ.get("HUB_BENCH_DATABASE_URL", DEFAULT_DSN))
    parser.add_argument("--nats", default=os.environ.get("HUB_BENCH_NATS_URL", DEFAULT_NATS))
    parser.add_argument("--events", type=int, default=20_000, help="log events to relay")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side; best counts")
    parser.add_argument("--listings", type=int, default=200, help="latency samples")
    opts = parser.parse_args(args)
    rates = asyncio.run(throughput(opts.dsn, opts.nats, opts.events, opts.rounds))
    waits = asyncio.run(latency(opts.dsn, opts.nats, opts.listings))
    print(f"{'case':28} {'figure':>12} {'target':>10}")
    print(f"{'raw publish_async (msg/s)':28} {rates['raw_per_s']:>12,}")
    print(f"{'relay log->acked (ev/s)':28} {rates['relay_per_s']:>12,}")
    print(f"{'relay / raw':28} {rates['ratio']:>12.2f} {'>= 0.70':>10}")
    print(f"{'CPU us/event raw, relay':28} {rates['raw_cpu_us']:>6} {rates['relay_cpu_us']:>5}")
    print(f"{'rounds (raw, relay, ratio)':28} {rates['rounds']}")
    print(f"{'2xx -> subscriber p50 (ms)':28} {waits['p50_ms']:>12.2f}")
    print(f"{'2xx -> subscriber p99 (ms)':28} {waits['p99_ms']:>12.2f} {'<= 100':>10}")
    print(f"{'received / listed':28} {waits['received']:>8}/{waits['listings']}")
    return {"throughput": rates, "latency": waits}


if __name__ == "__main__":
    main()
