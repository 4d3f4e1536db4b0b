"""`hub audit export`: the log up to the latest signed tree head, with the heads and the keys.

The directory holds:

    manifest.json      format, origin, public key, tree size and root of the latest head
    public_key.txt     every note verifier key that signed this log's heads, one a line
    tree_heads.jsonl   every signed head up to that size: tree_size, root_hash, checkpoint
    events.jsonl       leaf i on line i + 1: exactly its entry bytes (`schemas.audit`)
    leaf_hashes.bin    the hub's leaf hashes, 32 bytes each, in leaf order

`leaf_hashes.bin` lets `hub audit verify` name the first event that differs; it is trusted
only as far as its roots match the signed heads. Everything is streamed in batches.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import asyncpg
import msgspec

from hub.audit.heads import public_keys, stream_heads
from hub.clock import Clock
from projections import read_events
from projections.merkle import MerkleStore
from schemas.audit import EXPORT_FORMAT, ExportManifest, StoredTreeHead, entry_bytes

MANIFEST = "manifest.json"
PUBLIC_KEY = "public_key.txt"
HEADS = "tree_heads.jsonl"
EVENTS = "events.jsonl"
LEAVES = "leaf_hashes.bin"


class ExportError(RuntimeError):
    """Nothing to export, or the stored log and tree disagree."""


async def latest_head(conn: asyncpg.Connection) -> StoredTreeHead | None:
    row = await conn.fetchrow(
        "SELECT tree_size, root_hash, checkpoint, created_at FROM tree_heads "
        "ORDER BY tree_size DESC LIMIT 1"
    )
    return None if row is None else StoredTreeHead(row[0], bytes(row[1]).hex(), row[2], row[3])


async def export_log(
    conn: asyncpg.Connection,
    schema: str,
    dest: Path,
    clock: Clock,
    *,
    batch: int = 5000,
    on_start: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportManifest:
    head = await latest_head(conn)
    if head is None:
        raise ExportError("no signed tree head yet: start the hub (it signs them) and retry")
    keys = await public_keys(conn)
    origin = head.checkpoint.split("\n", 1)[0]
    dest.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before the stream
    if on_start is not None:
        on_start(head.tree_size)
    encoder = msgspec.json.Encoder()
    heads = 0
    with (dest / HEADS).open("wb") as out:
        async for stored in stream_heads(conn, upto=head.tree_size):
            out.write(encoder.encode(stored) + b"\n")
            heads += 1
    (dest / PUBLIC_KEY).write_text("".join(f"{key}\n" for key in keys))
    store = MerkleStore(schema)
    written, after = 0, 0
    with (dest / EVENTS).open("wb") as events, (dest / LEAVES).open("wb") as leaves:
        while written < head.tree_size:
            raws = await read_events(conn, after, min(batch, head.tree_size - written))
            if not raws:
                raise ExportError(f"the log ends after {written} events; the tree has more")
            events.write(b"".join(entry_bytes(raw) + b"\n" for raw in raws))
            leaves.write(b"".join(await store.leaf_hashes(conn, written, written + len(raws))))
            written += len(raws)
            after = raws[-1].position
            if progress is not None:
                progress(len(raws))
    manifest = ExportManifest(
        format=EXPORT_FORMAT,
        origin=origin,
        public_key=keys[-1] if keys else "",
        tree_size=head.tree_size,
        root_hash=head.root_hash,
        events=written,
        tree_heads=heads,
        exported_at=clock.now(),
    )
    (dest / MANIFEST).write_text(
        json.dumps(msgspec.to_builtins(manifest), indent=2, ensure_ascii=False) + "\n"
    )
    return manifest
