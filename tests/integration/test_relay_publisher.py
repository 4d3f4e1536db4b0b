"""The relay's publisher against a real stream: a run counts only when JetStream stored each
message at exactly the sequence the relay meant; anything else fails the run."""

from __future__ import annotations

import asyncio

import nats
import pytest

from adapters.relay_stream import Publisher, PublishRefusedError, StreamSpec, ensure_stream
from adapters.relay_wire import Outgoing


def messages(prefix: str, first: int, n: int) -> list[Outgoing]:
    return [
        Outgoing(p, f"event-{p}", f"{prefix}.x.registered._", b'{"n":%d}' % p)
        for p in range(first, first + n)
    ]


@pytest.fixture(name="stream")
async def fx_stream(nats_url, stream_prefix):
    nc = await nats.connect(nats_url)
    spec = StreamSpec(stream_prefix, stream_prefix.lower())
    await ensure_stream(nc.jetstream(), spec)
    publisher = Publisher(nc)
    await publisher.open()
    try:
        yield nc, spec, publisher
    finally:
        await publisher.close()
        await nc.jetstream().delete_stream(spec.name)
        await nc.close()


async def settle(run):
    await asyncio.wait_for(run.done, 10)
    return run


async def test_a_run_lands_at_consecutive_sequences(stream):
    nc, spec, publisher = stream
    first = await settle(await publisher.publish(messages(spec.subject_prefix, 1, 5), 0))
    second = await settle(await publisher.publish(messages(spec.subject_prefix, 6, 3), 5))
    assert (first.first_seq, first.last_position, second.first_seq) == (1, 5, 6)
    msg = await nc.jetstream().get_msg(spec.name, seq=8)
    assert msg.headers["Hub-Position"] == "8"
    assert msg.headers["Nats-Msg-Id"] == "event-8"
    assert msg.headers["Nats-Expected-Last-Sequence"] == "7"


async def test_a_run_aimed_past_the_stream_end_is_refused(stream):
    nc, spec, publisher = stream
    run = await publisher.publish(messages(spec.subject_prefix, 1, 3), 4)
    with pytest.raises(PublishRefusedError, match="wrong last sequence"):
        await settle(run)
    assert (await nc.jetstream().stream_info(spec.name)).state.messages == 0


async def test_a_repeat_is_refused_and_stored_once(stream):
    nc, spec, publisher = stream
    await settle(await publisher.publish(messages(spec.subject_prefix, 1, 3), 0))
    run = await publisher.publish(messages(spec.subject_prefix, 1, 3), 3)  # the same ids again
    with pytest.raises(PublishRefusedError):
        await settle(run)
    assert (await nc.jetstream().stream_info(spec.name)).state.messages == 3


async def test_a_publish_to_no_stream_is_refused(nats_url, stream_prefix):
    nc = await nats.connect(nats_url)
    publisher = Publisher(nc)
    await publisher.open()
    try:
        run = await publisher.publish(messages(f"{stream_prefix.lower()}none", 1, 2), 0)
        with pytest.raises(PublishRefusedError, match="no stream"):
            await settle(run)
    finally:
        await publisher.close()
        await nc.close()
