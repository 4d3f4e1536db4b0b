"""The relay under faults: SIGKILLed while it publishes (run as its own process, restarted),
and NATS down for 30 seconds while listings keep coming through the API. Either way every
event of the log reaches a durable consumer exactly once and in log order."""

from __future__ import annotations

import asyncio
import signal
import time

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
from ops.embedded import EmbeddedNats, free_port

pytestmark = pytest.mark.slow


async def test_relay_killed_mid_publish_loses_and_repeats_nothing(
    db, nats_url, stream_prefix, clock, tmp_path
):
    settings = relay_settings(db, None, stream_prefix)  # the API without an in-process relay
    watch = StreamWatch(nats_url, stream_prefix)
    log_path = tmp_path / "relay.log"
    async with AsyncTestClient(create_app(settings, clock)) as client:
        tax = await make_agency(client)
        await post_listings(client, tax, 300, concurrency=32)
        writer = asyncio.create_task(post_listings(client, tax, 120, concurrency=2))
        seen, cut_short = 0, 0
        for _ in range(3):
            relay = start_relay_process(db, nats_url, stream_prefix, log_path, batch=10)

            async def moved(before=seen):
                return await watch.position() > before

            await wait_until(moved, 30, "the relay to publish", step=0.002)
            relay.send_signal(signal.SIGKILL)  # in the middle of its catch-up
            relay.wait()
            seen = await watch.position()
            cut_short += seen < (await log_ids(db))[-1][0]
            await post_listings(client, tax, 100, concurrency=32)  # a backlog for the next one
        await writer
        head = (await log_ids(db))[-1][0]
        relay = start_relay_process(db, nats_url, stream_prefix, log_path)
        try:

            async def caught_up():
                return await watch.position() == head

            await wait_until(caught_up, 30, "the restarted relay to catch up")
        finally:
            relay.terminate()
            assert relay.wait(10) == 0  # SIGTERM: it drains and exits cleanly
            await watch.close()
    assert cut_short >= 2, log_path.read_text()[-2000:]  # the kills left work undone
    received = await drain(nats_url, stream_prefix)
    assert_exactly_once_in_order(received, await log_ids(db))


async def test_nats_outage_never_blocks_the_api_and_the_relay_catches_up(
    db, stream_prefix, clock, tmp_path
):
    server = EmbeddedNats(tmp_path / "nats", free_port())
    await asyncio.to_thread(server.start)
    try:
        settings = relay_settings(db, server.url, stream_prefix)
        async with AsyncTestClient(create_app(settings, clock)) as client:
            relay = client.app.state.hub.relay
            tax = await make_agency(client)
            before = await post_listings(client, tax, 50)

            async def published(position):
                async def check():
                    return relay.position >= position

                return check

            await wait_until(await published(max(before)), 20, "the relay to publish")

            await asyncio.to_thread(server.stop)
            slowest, during = 0.0, []
            outage_ends = time.monotonic() + 30
            while time.monotonic() < outage_ends:
                started = time.monotonic()
                during += await post_listings(client, tax, 4, concurrency=4)
                slowest = max(slowest, time.monotonic() - started)
                await asyncio.sleep(0.2)
            assert len(during) >= 100
            assert slowest < 1.0  # the API never waited for NATS
            assert relay.position == max(before)

            await asyncio.to_thread(server.start)  # same port, same data
            after = await post_listings(client, tax, 20)
            await wait_until(await published(max(after)), 40, "the relay to catch up")
        received = await drain(server.url, stream_prefix)
        assert_exactly_once_in_order(received, await log_ids(db))
    finally:
        await asyncio.to_thread(server.stop)
