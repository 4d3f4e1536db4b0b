"""What the audit API answers: the signed tree head, the public key, and proofs.

Proof sizes are leaf counts (tree sizes); an event is found by its log position, mapped to its
leaf index by the audit projection (`projections.audit`). A tree size the tree has not reached
is NotFound (`rule` audit.beyond_tree); a leaf outside the asked tree size is a RuleViolation.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import asyncpg

from adapters.tree_heads import HeadMessage, HeadsConfig, TreeHeadPublisher
from hub.audit.heads import TreeHeads
from hub.audit.keys import signer_from
from hub.clock import Clock
from hub.errors import InputError, NotFound, RuleViolation
from hub.settings import Settings
from projections import Connection, read_events
from projections.audit import AuditProjection, leaf_index_of, tree_position
from projections.merkle import MerkleStore, TreeSizeError, leaf_hash
from schemas.audit import (
    ConsistencyProof,
    InclusionProof,
    PublicKey,
    StoredTreeHead,
    TreeHead,
    entry_bytes,
)


class AuditLog:
    def __init__(self, pool: asyncpg.Pool, heads: TreeHeads, schema: str) -> None:
        self.pool = pool
        self.heads = heads
        self.store = MerkleStore(schema)
        self.publisher: TreeHeadPublisher | None = None

    async def close(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()

    @classmethod
    async def create(
        cls, pool: asyncpg.Pool, settings: Settings, clock: Clock, runners: Mapping[str, Any]
    ) -> AuditLog:
        """The audit log of the hub's schema; wakes its signer from the `audit` runner."""
        heads = TreeHeads(
            pool,
            signer_from(settings),
            clock,
            schema=settings.database_schema,
            every_events=settings.tree_head_every_events,
            every_seconds=settings.tree_head_every_seconds,
        )
        async with pool.acquire() as conn:
            await heads.setup(conn)
        if settings.nats_url:
            publisher = TreeHeadPublisher(
                HeadsConfig(
                    settings.nats_url,
                    settings.nats_stream,
                    settings.nats_subject_prefix,
                    settings.nats_replicas,
                )
            )

            async def publish(head: StoredTreeHead) -> bool:
                message = HeadMessage(heads.origin, head.tree_size, head.root_hash, head.checkpoint)
                return await publisher.publish(message)

            heads.on_signed = publish
        else:
            publisher = None
        runner = runners.get("audit")
        projection = getattr(runner, "projection", None)
        if isinstance(projection, AuditProjection):
            projection.on_applied = heads.notify
        log = cls(pool, heads, settings.database_schema)
        log.publisher = publisher
        return log

    def public_key(self) -> PublicKey:
        return PublicKey(self.heads.origin, self.heads.signer.verifier.key)

    async def _latest(self, conn: Connection, *, covering: int = 0) -> StoredTreeHead:
        head = await self.heads.latest(conn)
        if head is None or head.tree_size < covering:
            head = await self.heads.sign(conn)
        return head

    async def tree_head(self) -> TreeHead:
        async with self.pool.acquire() as conn:
            head = await self._latest(conn)
        return TreeHead(head.tree_size, head.root_hash, head.checkpoint)

    async def inclusion(self, position: int, tree_size: int | None) -> InclusionProof:
        async with self.pool.acquire() as conn:
            leaf = await leaf_index_of(conn, position)
            if leaf is None:
                _, last = await tree_position(conn)
                if position > last:
                    raise NotFound(
                        f"the event at position {position} is not in the tree yet",
                        field="position",
                        rule="audit.beyond_tree",
                    )
                raise NotFound(
                    f"no event at position {position}", field="position", rule="audit.no_event"
                )
            if tree_size is None:
                tree_size = (await self._latest(conn, covering=leaf + 1)).tree_size
            if tree_size <= leaf:
                raise RuleViolation(
                    f"the event at position {position} is leaf {leaf}: it is not in a tree of "
                    f"size {tree_size}",
                    field="tree_size",
                    rule="audit.leaf_not_in_tree",
                )
            [raw] = await read_events(conn, position - 1, 1, upto=position)
            try:
                path = await self.store.inclusion_proof(conn, leaf, tree_size)
            except TreeSizeError:
                raise _beyond("tree_size", tree_size) from None
        entry = entry_bytes(raw)
        return InclusionProof(
            leaf_index=leaf,
            tree_size=tree_size,
            entry=base64.b64encode(entry).decode(),
            leaf_hash=leaf_hash(entry).hex(),
            audit_path=[node.hex() for node in path],
            position=position,
        )

    async def consistency(self, first: int, second: int) -> ConsistencyProof:
        if first < 1:
            raise InputError(
                "first must be at least 1 (no proof exists from the empty tree)", field="first"
            )
        if first > second:
            raise InputError(f"first ({first}) is above second ({second})", field="first")
        async with self.pool.acquire() as conn:
            try:
                proof = await self.store.consistency_proof(conn, first, second)
            except TreeSizeError:
                raise _beyond("second", second) from None
        return ConsistencyProof(first, second, [node.hex() for node in proof])


def _beyond(field: str, size: int) -> NotFound:
    return NotFound(f"the tree has not reached size {size}", field=field, rule="audit.beyond_tree")
