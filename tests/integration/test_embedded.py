"""The embedded servers `make up` starts: real PostgreSQL and NATS processes whose data survives."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import asyncpg
import nats
import psycopg
import pytest
from nats.js.api import StorageType

from ops.embedded import EmbeddedNats, EmbeddedPostgres, free_port, port_is_free, start_cluster


def _postmaster_pid(server: EmbeddedPostgres) -> int:
    return int((server.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])


def _wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/exe").exists() and time.monotonic() < deadline:  # a zombie has none
        time.sleep(0.05)


@pytest.mark.slow
async def test_postgres_answers_both_drivers_and_keeps_data_across_restarts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        server = EmbeddedPostgres(tmp_path / "pg", port=busy_port)
        url = server.start()
    try:
        assert server.port != busy_port
        assert url == f"postgresql://postgres@127.0.0.1:{server.port}/postgres"
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT 1") == 1
            assert await conn.fetchval("SHOW fsync") == "on"
            await conn.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('hello')")
        finally:
            await conn.close()
        with psycopg.connect(url) as pconn:
            assert pconn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    assert not (server.pgdata / "postmaster.pid").exists()

    with EmbeddedPostgres(tmp_path / "pg") as again, psycopg.connect(again.url) as pconn:
        assert pconn.execute("SELECT note FROM kept").fetchall() == [("hello",)]


@pytest.mark.slow
def test_postgres_recovers_after_its_server_was_killed(tmp_path):
    first = EmbeddedPostgres(tmp_path / "pg")
    with psycopg.connect(first.start(), autocommit=True) as pconn:
        pconn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)")
    pid = _postmaster_pid(first)
    os.kill(pid, signal.SIGKILL)
    _wait_gone(pid)
    assert (first.pgdata / "postmaster.pid").exists()  # stale, as a crash leaves it

    with EmbeddedPostgres(tmp_path / "pg") as again, psycopg.connect(again.url) as pconn:
        assert pconn.execute("SELECT n FROM kept").fetchall() == [(7,)]
        assert _postmaster_pid(again) != pid


def test_postgres_adopts_the_server_a_killed_hub_left_running(tmp_path):
    left_running = EmbeddedPostgres(tmp_path / "pg")
    left_running.start()
    try:
        adopter = EmbeddedPostgres(tmp_path / "pg")
        assert adopter.start() == left_running.url
        adopter.stop()
        assert not (left_running.pgdata / "postmaster.pid").exists()
    finally:
        left_running.stop()


async def test_nats_jetstream_serves_a_durable_pull_consumer(tmp_path):
    with EmbeddedNats(tmp_path / "nats", free_port()) as server:
        conn = await nats.connect(server.url)
        try:
            js = conn.jetstream()
            await js.add_stream(name="ORDERS", subjects=["orders.>"], storage=StorageType.FILE)
            for n in range(3):
                await js.publish("orders.new", f"m{n}".encode())
            sub = await js.pull_subscribe("orders.>", durable="reader", stream="ORDERS")
            msgs = await sub.fetch(3, timeout=5)
            assert [msg.data for msg in msgs] == [b"m0", b"m1", b"m2"]
            for msg in msgs:
                await msg.ack()
            assert (await js.consumer_info("ORDERS", "reader")).num_pending == 0
        finally:
            await conn.close()


@pytest.mark.slow
async def test_nats_keeps_stream_messages_through_kill_and_restart(tmp_path):
    server = EmbeddedNats(tmp_path / "nats", free_port())
    server.start()
    try:
        conn = await nats.connect(server.url)
        try:
            js = conn.jetstream()
            await js.add_stream(name="KEPT", subjects=["kept.>"], storage=StorageType.FILE)
            for n in range(5):
                await js.publish("kept.x", f"m{n}".encode())
        finally:
            await conn.close()
        port = server.port
        server.kill()
        assert server._proc is None
        server.restart()
        assert server.port == port
        conn = await nats.connect(server.url)
        try:
            js = conn.jetstream()
            assert (await js.stream_info("KEPT")).state.messages == 5
            sub = await js.pull_subscribe("kept.>", durable="after", stream="KEPT")
            msgs = await sub.fetch(5, timeout=5)
            assert [msg.data for msg in msgs] == [f"m{n}".encode() for n in range(5)]
            for msg in msgs:
                await msg.ack()
        finally:
            await conn.close()
    finally:
        server.stop()


def test_nats_default_port_moves_off_a_taken_4222(tmp_path):
    with contextlib.ExitStack() as stack:
        if port_is_free(4222):
            blocker = stack.enter_context(socket.socket())
            blocker.bind(("127.0.0.1", 4222))
            blocker.listen()
        assert not port_is_free(4222)
        with EmbeddedNats(tmp_path / "nats") as server:
            assert server.port != 4222
            assert server.url == f"nats://127.0.0.1:{server.port}"


@pytest.mark.slow
async def test_nats_cluster_replicates_a_stream_across_three_nodes(tmp_path):
    nodes = start_cluster(tmp_path, 3)
    try:
        first = await nats.connect(nodes[0].url)
        last = await nats.connect(nodes[2].url)
        try:
            await first.jetstream().add_stream(name="R3", subjects=["r3.>"], num_replicas=3)
            await first.jetstream().publish("r3.a", b"replicated")
            info = await last.jetstream().stream_info("R3")
            assert info.state.messages == 1
            assert info.cluster is not None
            assert len(info.cluster.replicas or []) == 2
        finally:
            await first.close()
            await last.close()
    finally:
        for node in nodes:
            node.stop()


_schemas_seen: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
async def test_each_test_gets_a_schema_of_its_own(db, run):
    conn = await asyncpg.connect(db.url)
    try:
        query = "SELECT schema_name FROM information_schema.schemata WHERE schema_name = ANY($1)"
        present = {row[0] for row in await conn.fetch(query, [db.schema, *_schemas_seen])}
    finally:
        await conn.close()
    assert present == {db.schema}  # ours exists, the earlier test's was dropped
    assert db.schema.startswith("t_")
    assert db.schema not in _schemas_seen
    _schemas_seen.append(db.schema)


async def test_stream_prefix_isolates_jetstream_names(nats_url, stream_prefix):
    conn = await nats.connect(nats_url)
    try:
        js = conn.jetstream()
        name = f"{stream_prefix}_EVENTS"
        await js.add_stream(name=name, subjects=[f"{stream_prefix}.>"])
        try:
            ack = await js.publish(f"{stream_prefix}.one", b"x")
            assert ack.stream == name
        finally:
            await js.delete_stream(name)
    finally:
        await conn.close()
