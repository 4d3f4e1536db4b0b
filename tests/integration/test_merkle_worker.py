"""The hash worker: a tree appended with it is the tree appended in-process, row for row, over
random batch sizes across chunk, block and round boundaries; a worker that dies mid-stream is
replaced by in-process hashing without a wrong tree; the audit projection starts it per the
hub's setting and the hub's stop ends it."""

from __future__ import annotations

import asyncio
import os
import random

import asyncpg
import pytest
import structlog
from structlog.testing import capture_logs

from hub.audit import origin_for
from hub.bootstrap import build_hub
from hub.settings import Settings
from projections.audit import AuditProjection
from projections.merkle import (
    HashWorker,
    MerkleAppender,
    MerkleStore,
    NoteSigner,
    _appender,
    _worker,
    create_tables,
    leaf_hash,
    root_from_leaves,
)
from projections.merkle._appender import CHUNK, ROUND
from projections.merkle._edge import BLOCK_BYTES, BLOCK_SIZE, block_roots


def entries(start: int, count: int, salt: bytes = b"") -> list[bytes]:
    return [salt + b"event-%d-" % i + bytes(300) for i in range(start, start + count)]


@pytest.fixture(name="conn")
async def fx_conn(db):
    conn = await asyncpg.connect(db.url)
    await create_tables(conn, db.schema)
    await conn.execute(f'CREATE SCHEMA "{db.schema}_w"')
    await create_tables(conn, f"{db.schema}_w")
    try:
        yield conn
    finally:
        await conn.execute(f'DROP SCHEMA "{db.schema}_w" CASCADE')
        await conn.close()


@pytest.fixture(name="worker")
async def fx_worker():
    worker = await HashWorker.start()
    try:
        yield worker
    finally:
        await worker.close()


async def append(conn, appender, batch, *, hashed=False):
    async with conn.transaction():
        if hashed:
            return await appender.append_leaf_hashes(conn, batch)
        return await appender.append(conn, batch)


async def rows(conn, schema):
    blocks = await conn.fetch(f'SELECT * FROM "{schema}".merkle_leaf_blocks ORDER BY block')
    nodes = await conn.fetch(f'SELECT * FROM "{schema}".merkle_nodes ORDER BY level, idx')
    return [tuple(r) for r in blocks], [tuple(r) for r in nodes]


async def test_the_worker_gives_the_in_process_rows_bit_for_bit(db, conn, worker):
    rng = random.Random(9162)
    local = await MerkleAppender.load(conn, db.schema)
    remote = await MerkleAppender.load(conn, f"{db.schema}_w", hasher=worker)
    sizes = [1, 255, 1, CHUNK - 1, 2, CHUNK, BLOCK_SIZE, ROUND - 1, ROUND + 2, 3 * CHUNK + 17]
    sizes += [rng.randint(1, 3 * ROUND) for _ in range(6)] + [rng.randint(1, 600) for _ in range(6)]
    rng.shuffle(sizes)
    data: list[bytes] = []
    for number, size in enumerate(sizes):
        batch = entries(len(data), size)
        hashed = number % 3 == 2  # append_leaf_hashes takes the same path
        items = [leaf_hash(e) for e in batch] if hashed else batch
        assert await append(conn, local, items, hashed=hashed) == len(data) + size
        assert await append(conn, remote, items, hashed=hashed) == len(data) + size
        data += batch
        assert remote.root() == local.root()
    assert worker.alive
    assert worker.cpu_time > 0
    expected = root_from_leaves([leaf_hash(e) for e in data])
    assert local.root() == expected
    assert await rows(conn, db.schema) == await rows(conn, f"{db.schema}_w")
    assert await MerkleStore(f"{db.schema}_w").get_root(conn, len(data)) == expected


async def test_answers_come_in_order_and_equal_block_roots(worker):
    rng = random.Random(6962)
    requests = [rng.randbytes(BLOCK_BYTES * rng.randint(1, 9)) for _ in range(12)]
    futures = [worker.submit(memoryview(data)) for data in requests]
    assert [await f for f in futures] == [block_roots(data) for data in requests]
    with pytest.raises(ValueError, match="whole blocks"):
        worker.submit(b"x" * 32)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.timeout(60)  # the old start hung uvloop's runner on its way out
def test_the_worker_starts_with_its_request_pipe_widened_on_either_loop(loop):
    """`hub serve` runs uvloop, which gives a subprocess a socket pair for stdin and hides it:
    the worker must start there too (it once failed, and the hub hashed in-process), with a
    real pipe of `PIPE_BYTES`."""
    import fcntl  # noqa: PLC0415 - only here

    import uvloop  # noqa: PLC0415 - only here

    async def main() -> tuple[list[bytes], list[bytes], int]:
        worker = await _worker.start_hash_worker(1)
        assert worker is not None
        try:
            requests = [os.urandom(BLOCK_BYTES * k) for k in (1, 3)]
            answers = [await worker.submit(data) for data in requests]  # type: ignore[misc]
            # the worker's stdin, opened again through /proc: the same pipe
            fd = os.open(f"/proc/{worker.pid}/fd/0", os.O_WRONLY | os.O_NONBLOCK)
            try:
                size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
            finally:
                os.close(fd)
        finally:
            await worker.close()
        return answers, [block_roots(data) for data in requests], size

    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        answers, expected, size = runner.run(main())
    assert answers == expected
    assert size >= _worker.PIPE_BYTES


async def test_a_worker_that_dies_leaves_the_tree_right(db, conn, worker, monkeypatch):
    appender = await MerkleAppender.load(conn, db.schema, hasher=worker)
    data = entries(0, 3000)
    await append(conn, appender, data)
    worker.process.kill()  # requests of the next append go to a dead process
    with capture_logs() as logs:
        for module in (_appender, _worker):  # fresh loggers: the hub's config caches them
            monkeypatch.setattr(module, "log", structlog.get_logger(module.__name__))
        for size in [5000, 2 * ROUND + 3]:
            batch = entries(len(data), size)
            await append(conn, appender, batch)
            data += batch
    assert not worker.alive
    assert worker.submit(b"\0" * BLOCK_BYTES) is None
    events = {entry["event"] for entry in logs}
    assert {"merkle_hash_worker_gone", "merkle_hash_worker_fallback"} <= events
    expected = root_from_leaves([leaf_hash(e) for e in data])
    assert appender.root() == expected
    assert await MerkleStore(db.schema).get_root(conn, len(data)) == expected
    assert (await MerkleAppender.load(conn, db.schema)).root() == expected


class Broken(Exception):
    pass


async def test_an_abandoned_append_does_not_shift_the_answers(db, conn, worker):
    appender = await MerkleAppender.load(conn, db.schema, hasher=worker)
    data = entries(0, 1000)
    await append(conn, appender, data)

    async def fail(*_):
        raise Broken

    for size in [CHUNK, 3 * CHUNK + 1, 2 * ROUND]:  # blocks handed over, roots not awaited
        appender._write = fail
        with pytest.raises(Broken):
            await append(conn, appender, entries(0, size, b"gone"))
        del appender._write
        batch = entries(len(data), size + 5)
        await append(conn, appender, batch)  # the same worker, its next answers
        data += batch
    assert worker.alive
    expected = root_from_leaves([leaf_hash(e) for e in data])
    assert appender.root() == expected
    assert await MerkleStore(db.schema).get_root(conn, len(data)) == expected


async def test_the_audit_projection_starts_and_ends_its_worker():
    projection = AuditProjection(hash_workers=1)
    worker = await projection.hasher()
    assert worker is not None
    assert worker.alive
    assert await projection.hasher() is worker  # one, kept
    await projection.close()
    assert worker.process.returncode == 0
    with pytest.raises(ProcessLookupError):  # ended and reaped
        os.kill(worker.pid, 0)
    assert await AuditProjection(hash_workers=0).hasher() is None


async def test_the_hub_builds_the_worker_from_its_setting_and_ends_it_on_stop(db):
    settings = Settings(
        database_url=db.url,
        database_schema=db.schema,
        admin_key="hub_admin_test_key",
        log_signing_key=NoteSigner.generate(origin_for("320000")).private_key(),
        merkle_hash_workers=1,
    )
    hub = await build_hub(settings)
    await hub.start()
    projection = hub.runners["audit"].projection
    assert isinstance(projection, AuditProjection)
    worker = await projection.hasher()  # as its first batch does
    assert worker is not None
    assert worker.alive
    await hub.stop()
    assert worker.process.returncode == 0
    assert not Settings.from_env({"HUB_MERKLE_HASH_WORKERS": "0"}).merkle_hash_workers
