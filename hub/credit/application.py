"""The credit log as an eventsourcing Application, and the unit of work that commands use.

The application stores events in `<schema>.credit_events` through eventsourcing's PostgreSQL
module (psycopg); its state is msgpack (`schemas.codec`). The application is synchronous, so
the async API reaches it through `hub.credit.committer`, which runs commands on one writer
thread and saves the commands of concurrent requests in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, StoredEvent, Transcoder

from hub.credit.domainmodel import Listing
from schemas.codec import decode_state, encode_state

EVENTS_TABLE = "credit_events"


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

    def append_new(self, aggregates: list[Aggregate]) -> dict[UUID, int]:
        """Append the pending events of new aggregates with one COPY; their last positions.

        The same rows `save()` writes, under the same `LOCK TABLE ... IN EXCLUSIVE MODE`, so
        positions still follow commit order; a primary-key clash (a concurrent writer created
        one of them) raises IntegrityError and writes nothing.
        """
        stored = [
            self.mapper.to_stored_event(event)
            for aggregate in aggregates
            for event in aggregate.collect_events()
        ]
        datastore = self.recorder.datastore  # type: ignore[attr-defined]
        table = f'"{datastore.schema}".{EVENTS_TABLE}'
        ids = [aggregate.id for aggregate in aggregates]
        try:
            with datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
                curs.execute(f"LOCK TABLE {table} IN EXCLUSIVE MODE")
                columns = "originator_id, originator_version, topic, state"
                with curs.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(["uuid", "int8", "text", "bytea"])
                    for item in stored:
                        copy.write_row(
                            (item.originator_id, item.originator_version, item.topic, item.state)
                        )
                curs.execute(
                    f"SELECT originator_id, max(notification_id) AS position FROM {table} "
                    "WHERE originator_id = ANY(%s) GROUP BY originator_id",
                    (ids,),
                )
                positions = {row["originator_id"]: row["position"] for row in curs.fetchall()}
                curs.execute(f"NOTIFY {EVENTS_TABLE}")
        except psycopg.errors.UniqueViolation as exc:
            raise IntegrityError(exc) from exc
        return positions


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
