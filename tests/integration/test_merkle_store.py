"""The Merkle tree in PostgreSQL: appends in random batches give the RFC root, proofs from the
rows verify for current and past heads, and a restarted appender carries on."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from projections.merkle import (
    EMPTY_ROOT,
    MerkleAppender,
    MerkleStore,
    StoreError,
    TreeSizeError,
    create_tables,
    leaf_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from projections.merkle._appender import ROUND
from projections.merkle._worker import HashWorker


def entries(start: int, count: int, salt: bytes = b"") -> list[bytes]:
    return [salt + b"event-%d-" % i + bytes(300) for i in range(start, start + count)]


@pytest.fixture(name="conn")
async def fx_conn(db):
    conn = await asyncpg.connect(db.url)
    await create_tables(conn, db.schema)
    await create_tables(conn, db.schema)  # safe to run twice
    try:
        yield conn
    finally:
        await conn.close()


async def append(conn, appender, batch):
    async with conn.transaction():
        return await appender.append(conn, batch)


async def test_random_batches_give_the_rfc_root_and_proofs_that_verify(db, conn):
    rng = random.Random(6962)
    store = MerkleStore(db.schema)
    appender = await MerkleAppender.load(conn, db.schema)
    assert (appender.size, appender.root()) == (0, EMPTY_ROOT)
    assert await store.get_root(conn, 0) == EMPTY_ROOT
    data: list[bytes] = []
    heads = [0]
    for batch_size in [
        1,
        255,
        1,
        256,
        511,
        3,
        *(rng.choice([1, 7, 200, 256, 700]) for _ in range(8)),
    ]:
        batch = entries(len(data), batch_size)
        size = await append(conn, appender, batch)
        data += batch
        heads.append(size)
        assert size == len(data) == await store.tree_size(conn)
        assert appender.root() == root_from_leaves([leaf_hash(e) for e in data])
        assert await store.get_root(conn, size) == appender.root()
    leaves = [leaf_hash(e) for e in data]
    assert await store.leaf_hashes(conn, 250, 530) == leaves[250:530]
    roots = {
        n: root_from_leaves(leaves[:n])
        for n in {*heads, *rng.sample(range(1, len(leaves) + 1), 40)}
    }
    for n, root in roots.items():
        assert await store.get_root(conn, n) == root
    for _ in range(300):
        size = rng.choice([*heads[1:], rng.randint(1, len(leaves))])
        index = rng.randrange(size)
        proof = await store.inclusion_proof(conn, index, size)
        verify_inclusion(
            leaves[index], index, size, proof, roots.get(size) or root_from_leaves(leaves[:size])
        )
    for _ in range(200):
        first, second = sorted(
            rng.sample([*heads[1:], *rng.sample(range(1, len(leaves) + 1), 5)], 2)
        )
        proof = await store.consistency_proof(conn, first, second)
        verify_consistency(
            first,
            second,
            root_from_leaves(leaves[:first]),
            root_from_leaves(leaves[:second]),
            proof,
        )
    assert await store.consistency_proof(conn, len(leaves), len(leaves)) == []


async def test_sizes_beyond_the_tree_are_refused(db, conn):
    store = MerkleStore(db.schema)
    appender = await MerkleAppender.load(conn, db.schema)
    await append(conn, appender, entries(0, 300))
    for call in [
        store.get_root(conn, 301),
        store.get_root(conn, 512),
        store.inclusion_proof(conn, 300, 301),
        store.inclusion_proof(conn, 0, 1000),
        store.inclusion_proof(conn, 5, 5),
        store.consistency_proof(conn, 10, 301),
        store.consistency_proof(conn, 301, 301),
        store.consistency_proof(conn, 0, 10),
        store.get_root(conn, -1),
    ]:
        with pytest.raises(TreeSizeError):
            await call
    with pytest.raises(StoreError):
        await appender.append(conn, entries(300, 1))  # outside a transaction


async def test_a_restarted_appender_continues_and_a_rollback_is_forgotten(db, conn):
    first = await MerkleAppender.load(conn, db.schema)
    data = entries(0, 300)
    await append(conn, first, data)
    # A transaction that rolls back leaves the rows and the appender's next append consistent.
    tx = conn.transaction()
    await tx.start()
    await first.append(conn, entries(300, 50, b"rolled back"))
    await tx.rollback()
    assert first.size == 350
    restarted = await MerkleAppender.load(conn, db.schema)
    assert (restarted.size, restarted.root()) == (
        300,
        root_from_leaves([leaf_hash(e) for e in data]),
    )
    more = entries(300, 700)
    await append(conn, restarted, more[:500])
    await append(conn, first, more[500:])  # reloads: the rolled-back 50 are gone
    data += more
    expected = root_from_leaves([leaf_hash(e) for e in data])
    assert first.size == 1000
    assert first.root() == expected
    assert await MerkleStore(db.schema).get_root(conn, 1000) == expected
    assert (await MerkleAppender.load(conn, db.schema)).root() == expected


async def test_a_second_concurrent_writer_fails_instead_of_forking_the_tree(db, conn):
    other = await asyncpg.connect(db.url)
    try:
        a = await MerkleAppender.load(conn, db.schema)
        b = await MerkleAppender.load(other, db.schema)
        await append(conn, a, entries(0, 100))
        await b.reload(other)
        async with conn.transaction():
            await a.append(conn, entries(100, 100, b"a"))
            tx = other.transaction()
            await tx.start()
            racing = asyncio.ensure_future(b.append(other, entries(100, 100, b"b")))
            await asyncio.sleep(0.2)  # b waits on a's uncommitted block
        with pytest.raises(StoreError):
            await racing
        await tx.rollback()
    finally:
        await other.close()
    expected = root_from_leaves([leaf_hash(e) for e in entries(0, 100) + entries(100, 100, b"a")])
    assert await MerkleStore(db.schema).get_root(conn, 200) == expected


async def test_a_batch_of_several_rounds_gives_the_rfc_tree(db, conn):
    appender = await MerkleAppender.load(conn, db.schema)
    data = entries(0, 100)
    await append(conn, appender, data)
    batch = entries(100, 2 * ROUND + 1000)  # three rounds, the first one not block-aligned
    await append(conn, appender, batch)
    data += batch
    leaves = [leaf_hash(e) for e in data]
    store = MerkleStore(db.schema)
    assert appender.root() == root_from_leaves(leaves)
    assert await store.get_root(conn, len(data)) == appender.root()
    assert await store.leaf_hashes(conn, 0, len(data)) == leaves
    for size in [ROUND, ROUND + 100, 2 * ROUND + 77]:
        assert await store.get_root(conn, size) == root_from_leaves(leaves[:size])


async def test_block_hashing_in_another_process_gives_the_same_tree(db, conn):
    worker = await HashWorker.start()
    try:
        appender = await MerkleAppender.load(conn, db.schema, hasher=worker)
        data = entries(0, 100)
        await append(conn, appender, data)
        for size in [5000, 1, 2047, 4096, 300, ROUND + 5]:  # across round and block boundaries
            batch = entries(len(data), size)
            await append(conn, appender, batch)
            data += batch
        assert worker.alive
    finally:
        await worker.close()
    expected = root_from_leaves([leaf_hash(e) for e in data])
    assert appender.root() == expected
    assert await MerkleStore(db.schema).get_root(conn, len(data)) == expected
    assert (await MerkleAppender.load(conn, db.schema)).root() == expected
