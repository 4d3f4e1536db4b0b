"""The credit log as an eventsourcing Application, and the unit of work that commands use.

The application stores events in `<schema>.credit_events` through eventsourcing's PostgreSQL
module (psycopg); its state is msgpack (`schemas.codec`). The application is synchronous, so
the async API reaches it through `hub.credit.committer`, which runs commands on one writer
thread and saves the commands of concurrent requests in one transaction.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from datetime import datetime
from itertools import repeat
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, StoredEvent, Transcoder

from hub.credit.domainmodel import Listing
from schemas.codec import decode_state, encode_state

EVENTS_TABLE = "credit_events"
_FOUR_BYTES = struct.Struct(">I")


class MsgpackTranscoder(Transcoder):
    """msgspec msgpack for event state: datetimes ride msgpack's timestamp extension."""

    def encode(self, obj: Any) -> bytes:
        return encode_state(obj)

    def decode(self, data: bytes) -> Any:
        return decode_state(data)


class CreditApplication(Application[UUID]):
    name = "credit"

    def construct_transcoder(self) -> Transcoder:
        return MsgpackTranscoder()

    def load(self, aggregate_id: UUID) -> tuple[Aggregate | None, int]:
        """An aggregate and the log position of its last event, from one query."""
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        schema = datastore.schema
        sql = (
            f'SELECT originator_version, topic, state, notification_id FROM "{schema}".'
            f"{EVENTS_TABLE} WHERE originator_id = %s ORDER BY originator_version"
        )
        with datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql, (aggregate_id,), prepare=True)
            rows = curs.fetchall()
        aggregate: Aggregate | None = None
        position = 0
        for row in rows:
            stored = StoredEvent(
                originator_id=aggregate_id,
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            event: Any = self.mapper.to_domain_event(stored)
            aggregate = event.mutate(aggregate)
            position = row["notification_id"]
        return aggregate, position

    def load_many(self, aggregate_ids: list[UUID]) -> dict[UUID, tuple[Aggregate, int]]:
        """`load()` for many aggregates with one query: those that exist, with positions."""
        if not aggregate_ids:
            return {}
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        sql = (
            "SELECT originator_id, originator_version, topic, state, notification_id "
            f'FROM "{datastore.schema}".{EVENTS_TABLE} WHERE originator_id = ANY(%s) '
            "ORDER BY originator_id, originator_version"
        )
        with datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql, (aggregate_ids,))
            rows = curs.fetchall()
        found: dict[UUID, tuple[Aggregate, int]] = {}
        for row in rows:
            originator: UUID = row["originator_id"]
            stored = StoredEvent(
                originator_id=originator,
                originator_version=row["originator_version"],
                topic=row["topic"],
                state=bytes(row["state"]),
            )
            event: Any = self.mapper.to_domain_event(stored)
            before = found.get(originator)
            aggregate = event.mutate(before[0] if before else None)
            found[originator] = (aggregate, row["notification_id"])
        return found

    def existing_ids(self, aggregate_ids: list[UUID]) -> set[UUID]:
        """Which of these aggregates already have events in the log (one indexed query)."""
        if not aggregate_ids:
            return set()
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        sql = (
            f'SELECT originator_id FROM "{datastore.schema}".{EVENTS_TABLE} '
            "WHERE originator_id = ANY(%s) AND originator_version = 1"
        )
        with datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql, (aggregate_ids,))
            return {row["originator_id"] for row in curs.fetchall()}

    def append_new(self, topic: str, events: list[tuple[bytes, bytes]]) -> list[int]:
        """Append the first events (version 1) of new aggregates, all of one topic, with one COPY.

        `events` are (originator id as its 16 bytes, stored state) in the order to append them;
        the answer is their log positions in that order. The rows are those `save()` writes,
        under the same `LOCK TABLE ... IN EXCLUSIVE MODE`, so positions still follow commit
        order. The COPY is binary and assembled here in one piece, by C-level passes over the
        rows. A primary-key clash (an aggregate already has events) raises IntegrityError
        and writes nothing.
        """
        if not events:
            return []
        if self.mapper.compressor or self.mapper.cipher:  # as `to_stored_event` would
            events = [(originator, self._protect(state)) for originator, state in events]
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        table = f'"{datastore.schema}".{EVENTS_TABLE}'
        encoded = topic.encode()
        # A COPY BINARY row: 4 fields; uuid (16 bytes), int8 version 1, text topic, bytea state.
        head = b"\x00\x04\x00\x00\x00\x10"
        middle = b"".join(
            (b"\x00\x00\x00\x08", (1).to_bytes(8, "big"), len(encoded).to_bytes(4, "big"), encoded)
        )
        originators, states = zip(*events, strict=True)
        rows = zip(  # each row's pieces, joined by one C-level pass over all rows
            repeat(head),
            originators,
            repeat(middle),
            map(_FOUR_BYTES.pack, map(len, states)),
            states,
            strict=False,  # the constant pieces repeat without end
        )
        signature = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension
        payload = b"".join((signature, *map(b"".join, rows), b"\xff\xff"))
        columns = "originator_id, originator_version, topic, state"
        try:
            with datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
                # Under the lock nobody else appends: every row after the head is one of ours.
                curs.execute(
                    f"LOCK TABLE {table} IN EXCLUSIVE MODE; "
                    f"SELECT coalesce(max(notification_id), 0) AS head FROM {table}"
                )
                curs.nextset()
                row = curs.fetchone()
                before = int(row["head"]) if row else 0
                with curs.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(payload)
                # COPY numbers its rows in the order it reads them: the positions are one run,
                # which the first and last ids confirm (else they are read back one by one).
                curs.execute(
                    f"WITH ours AS (SELECT notification_id AS n, originator_id AS id FROM {table} "
                    f"WHERE notification_id > {before}) "
                    "SELECT count(*) AS rows, min(n) AS first, max(n) AS last, "
                    "(SELECT uuid_send(id) FROM ours ORDER BY n LIMIT 1) AS first_id, "
                    "(SELECT uuid_send(id) FROM ours ORDER BY n DESC LIMIT 1) AS last_id "
                    f"FROM ours; NOTIFY {EVENTS_TABLE}"
                )
                run = curs.fetchone()
                if (
                    run is not None
                    and run["rows"] == len(events)
                    and run["last"] - run["first"] + 1 == len(events)
                    and bytes(run["first_id"]) == events[0][0]
                    and bytes(run["last_id"]) == events[-1][0]
                ):
                    return list(range(run["first"], run["last"] + 1))
                curs.execute(
                    f"SELECT uuid_send(originator_id) AS id, notification_id FROM {table} "
                    "WHERE notification_id > %s",
                    (before,),
                )
                positions = {bytes(r["id"]): r["notification_id"] for r in curs.fetchall()}
        except psycopg.errors.UniqueViolation as exc:
            raise IntegrityError(exc) from exc
        return [positions[originator] for originator, _ in events]

    def _protect(self, state: bytes) -> bytes:
        if self.mapper.compressor:
            state = self.mapper.compressor.compress(state)
        if self.mapper.cipher:
            state = self.mapper.cipher.encrypt(state)
        return state


class UnitOfWork:
    """The aggregates that one batch of commands reads and changes.

    Commands in one batch see each other's changes through the cache. In optimistic mode a
    command that creates an aggregate does not read first: the batch's save fails on the
    primary key if it exists, and the committer runs each command again carefully.
    """

    def __init__(self, app: CreditApplication, now: datetime, *, optimistic: bool) -> None:
        self.app = app
        self.now = now
        self.optimistic = optimistic
        self._cache: dict[UUID, Aggregate | None] = {}
        self._positions: dict[UUID, int] = {}
        self._marks: dict[UUID, int] = {}

    def _touch(self, aggregate_id: UUID) -> None:
        """Remember how many events an aggregate had pending when the command first touched it."""
        if aggregate_id not in self._marks:
            found = self._cache.get(aggregate_id)
            self._marks[aggregate_id] = len(found.pending_events) if found is not None else 0

    def get(self, aggregate_id: UUID) -> Aggregate | None:
        if aggregate_id not in self._cache:
            aggregate, position = self.app.load(aggregate_id)
            self._cache[aggregate_id] = aggregate
            self._positions[aggregate_id] = position
        self._touch(aggregate_id)
        return self._cache[aggregate_id]

    def get_for_create(self, aggregate_id: UUID) -> Aggregate | None:
        if self.optimistic and aggregate_id not in self._cache:
            return None
        return self.get(aggregate_id)

    def get_listing(self, listing_id: UUID) -> Listing | None:
        found = self.get(listing_id)
        return found if isinstance(found, Listing) else None

    def add(self, aggregate: Aggregate) -> None:
        self._touch(aggregate.id)
        self._cache[aggregate.id] = aggregate

    def position(self, aggregate_id: UUID) -> int:
        """The stored position of an aggregate's last event before this batch (0: none)."""
        return self._positions.get(aggregate_id, 0)

    def begin_command(self) -> None:
        """Start tracking the aggregates that the next command touches."""
        self._marks = {}

    def command_events(self) -> Iterator[object]:
        """The events that the current command added (to the aggregates it touched)."""
        for key, mark in self._marks.items():
            aggregate = self._cache.get(key)
            if aggregate is not None:
                yield from aggregate.pending_events[mark:]

    def aggregates(self) -> list[Aggregate]:
        return [a for a in self._cache.values() if a is not None and a.pending_events]
