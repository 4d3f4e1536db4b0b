"""`hub audit verify DIR`: check an export offline, with no database and no hub.

1. Every signed tree head must carry a valid signature by a trusted key (the export's
   `public_key.txt`, or the one key given with `--key`) and state the size and root it says.
2. Each line of `events.jsonl` is hashed as a leaf (SHA-256 of 0x00 and the line); the roots of
   those leaves at each head's size must equal the signed roots, and the last head must cover
   every line.
3. The first line whose leaf differs from the hub's (`leaf_hashes.bin`, itself checked against
   the signed roots) is named: altered, missing (removed), extra, or reordered (swapped).

Memory stays O(log n): roots are kept as the stack of perfect subtree roots of the right edge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import msgspec

from hub.audit.export import EVENTS, HEADS, LEAVES, PUBLIC_KEY
from projections.merkle import (
    HASH_SIZE,
    MerkleError,
    NoteVerifier,
    node_hash,
    verify_checkpoint,
)
from schemas.audit import ExportedEvent, StoredTreeHead

PROGRESS_EVERY = 10_000


@dataclass
class Report:
    events: int = 0
    heads: int = 0
    tree_size: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


class _Edge:
    """The right edge of a Merkle tree being built leaf by leaf: its root at any size."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []

    def push(self, leaf: bytes) -> None:
        size, value = 1, leaf
        while self.stack and self.stack[-1][0] == size:
            value = node_hash(self.stack.pop()[1], value)
            size *= 2
        self.stack.append((size, value))

    def root(self) -> bytes:
        if not self.stack:
            return hashlib.sha256(b"").digest()
        value = self.stack[-1][1]
        for _, left in reversed(self.stack[:-1]):
            value = node_hash(left, value)
        return value


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        for line in source:
            yield line[:-1] if line.endswith(b"\n") else line


def _leaf(line: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + line).digest()


def _position(line: bytes) -> int | None:
    try:
        return msgspec.json.decode(line, type=ExportedEvent).position
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _reference(source: BinaryIO, index: int) -> bytes | None:
    source.seek(index * HASH_SIZE)
    value = source.read(HASH_SIZE)
    return value if len(value) == HASH_SIZE else None


def _heads(directory: Path, verifiers: list[NoteVerifier], report: Report) -> list[StoredTreeHead]:
    heads: list[StoredTreeHead] = []
    decoder = msgspec.json.Decoder(StoredTreeHead)
    for n, line in enumerate(_lines(directory / HEADS), 1):
        try:
            head = decoder.decode(line)
            checkpoint = verify_checkpoint(head.checkpoint, verifiers)
        except (msgspec.DecodeError, msgspec.ValidationError, MerkleError) as exc:
            report.problems.append(f"tree head on line {n} of {HEADS} does not verify: {exc}")
            continue
        if checkpoint.size != head.tree_size or checkpoint.root.hex() != head.root_hash:
            report.problems.append(f"tree head on line {n} states other values than it signs")
            continue
        heads.append(head)
    heads.sort(key=lambda h: h.tree_size)
    report.heads = len(heads)
    return heads


def _diagnose(
    index: int, line: bytes, following: bytes | None, previous: int | None, reference: BinaryIO
) -> str:
    """Why line `index + 1` differs from the hub's leaf `index`, in the auditor's words."""
    where = f"(line {index + 1})"
    after = f"after position {previous}" if previous is not None else "at the start of the log"
    position = _position(line)
    if position is None:
        return f"event {where} {after} altered: it is not an event entry"
    mine, theirs = _leaf(line), _reference(reference, index)
    next_theirs = _reference(reference, index + 1)
    next_mine = _leaf(following) if following is not None else None
    later = _position(following) if following is not None else None
    if next_theirs == mine and next_mine == theirs:
        kind = f"reordered: it is swapped with position {position} (line {index + 1})"
        return f"event at position {later} (line {index + 2}) {kind}"
    if previous is not None and position <= previous:
        kind = f"reordered: it comes {after}"
    elif next_theirs == mine:
        kind = f"missing before position {position} {where}: leaf {index} was removed"
        return f"event {after} {kind}"
    elif next_mine is not None and next_mine == theirs:
        reordered = later is not None and later < position
        kind = f"reordered: it comes before {later}" if reordered else "not in the log: extra"
    else:
        kind = "altered: leaf hash differs"
    return f"event at position {position} {where} {kind}"


class _Scan:
    """Walks the events and the hub's leaf hashes together, noting the first difference."""

    def __init__(self, heads: list[StoredTreeHead], reference: BinaryIO, peek: BinaryIO) -> None:
        self.sizes = {h.tree_size: h for h in heads}
        self.tree_size = heads[-1].tree_size
        self.reference, self.peek = reference, peek
        self.mine, self.theirs = _Edge(), _Edge()
        self.event_problem: str | None = None
        self.root_problem: str | None = None
        self.previous: int | None = None
        self.index = 0

    def step(self, line: bytes, following: bytes | None) -> None:
        index, leaf = self.index, _leaf(line)
        expected = self.reference.read(HASH_SIZE)
        self.mine.push(leaf)
        if len(expected) == HASH_SIZE:
            self.theirs.push(expected)
        if self.event_problem is None:
            if index >= self.tree_size:
                self.event_problem = (
                    f"event at position {_position(line)} (line {index + 1}) is not covered by "
                    "a signed tree head"
                )
            elif leaf != expected:
                self.event_problem = _diagnose(index, line, following, self.previous, self.peek)
            else:
                self.previous = _position(line)
        self.index = index = index + 1
        if index in self.sizes and self.root_problem is None:
            self.root_problem = _check_roots(
                self.sizes[index], self.mine.root(), self.theirs.root()
            )

    def finish(self) -> list[str]:
        if self.index < self.tree_size and self.event_problem is None:
            self.event_problem = (
                f"event missing after position {self.previous} (line {self.index}): the signed "
                f"tree head covers {self.tree_size} events, the export has {self.index}"
            )
        return [p for p in (self.event_problem, self.root_problem) if p is not None]


def verify_export(
    directory: Path, *, key: str | None = None, progress: Callable[[int], None] | None = None
) -> Report:
    """Verify an export; `report.problems` is empty when it holds, else names the first fault."""
    report = Report()
    try:
        keys = [key] if key else (directory / PUBLIC_KEY).read_text().split()
        heads = _heads(directory, [NoteVerifier.from_key(k) for k in keys], report)
    except (OSError, MerkleError) as exc:
        report.problems.append(f"cannot read the export: {exc}")
        return report
    if not heads:
        report.problems.append("no verified tree head in the export")
        return report
    report.tree_size = heads[-1].tree_size
    with (directory / LEAVES).open("rb") as reference, (directory / LEAVES).open("rb") as peek:
        scan = _Scan(heads, reference, peek)
        lines = _lines(directory / EVENTS)
        line = next(lines, None)
        while line is not None:
            following = next(lines, None)
            scan.step(line, following)
            if progress is not None and scan.index % PROGRESS_EVERY == 0:
                progress(PROGRESS_EVERY)
            line = following
    if progress is not None:
        progress(scan.index % PROGRESS_EVERY)
    report.events = scan.index
    report.problems += scan.finish()
    return report


def _check_roots(head: StoredTreeHead, mine: bytes, theirs: bytes) -> str | None:
    if mine.hex() == head.root_hash:
        return None
    if theirs.hex() != head.root_hash:
        return (
            f"the events up to line {head.tree_size} do not match the signed tree head of size "
            f"{head.tree_size}, and {LEAVES} does not either (altered with them)"
        )
    return f"the events up to line {head.tree_size} do not match the signed tree head"
