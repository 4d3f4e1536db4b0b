"""A three-node NATS cluster on loopback with the relay's stream replicated three times: the
stream leader is SIGKILLed while the relay publishes, and the stream still holds every event
of the log once and in order."""

from __future__ import annotations

import asyncio

import nats
import pytest
from litestar.testing import AsyncTestClient
from relay_support import (
    StreamWatch,
    assert_exactly_once_in_order,
    drain,
    log_ids,
    make_agency,
    post_listings,
    relay_settings,
    start_relay_process,
    wait_until,
)

from hub.api.app import create_app
from ops.embedded import start_cluster

pytestmark = pytest.mark.slow


async def stream_leader(url, stream):
    nc = await nats.connect(servers=url.split(","))
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.config.num_replicas == 3
        return info.cluster.leader
    finally:
        await nc.close()


async def test_replicated_stream_keeps_every_event_when_a_node_dies(
    db, stream_prefix, clock, tmp_path
):
    nodes = await asyncio.to_thread(start_cluster, tmp_path / "cluster", 3)
    urls = ",".join(node.url for node in nodes)
    relay = None
    try:
        settings = relay_settings(db, None, stream_prefix)
        async with AsyncTestClient(create_app(settings, clock)) as client:
            tax = await make_agency(client)
            await post_listings(client, tax, 300, concurrency=32)
            writer = asyncio.create_task(post_listings(client, tax, 60, concurrency=2))
            relay = start_relay_process(
                db, urls, stream_prefix, tmp_path / "relay.log", replicas=3, batch=10
            )
            watch = StreamWatch(urls, stream_prefix)

            async def moved():
                return await watch.position() > 0

            await wait_until(moved, 30, "the relay to publish", step=0.002)
            leader = await stream_leader(urls, stream_prefix)
            victim = next(node for node in nodes if node.server_name == leader)
            await asyncio.to_thread(victim.kill)  # SIGKILL the stream leader mid-publish
            await watch.close()
            survivors = ",".join(node.url for node in nodes if node is not victim)
            watch = StreamWatch(survivors, stream_prefix)
            cut_at = await watch.position()
            await writer
            head = (await log_ids(db))[-1][0]
            assert cut_at < head

            async def caught_up():
                return await watch.position() == head

            await wait_until(caught_up, 45, "the relay to finish on two nodes")
            await watch.close()
        received = await drain(survivors, stream_prefix)
        assert_exactly_once_in_order(received, await log_ids(db))
    finally:
        if relay is not None:
            relay.kill()
            relay.wait()
        for node in nodes:
            await asyncio.to_thread(node.stop)
