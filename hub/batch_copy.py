"""The importer's COPY into the credit log: new decisions' first events, a chunk at a time.

`CreditApplication.append_new` does the same for `write_many`, on a pooled connection, and
answers each event's log position, which costs two more round trips a chunk (the head before
the COPY and the positions after it). An import needs no positions, only whether the chunk
went in, so it writes through a connection of its own (autocommit, so no implicit BEGIN of
its own) in three round trips:

    BEGIN; LOCK TABLE credit_events IN EXCLUSIVE MODE; NOTIFY credit_events
    COPY credit_events (...) FROM STDIN (FORMAT BINARY)   -- the chunk, assembled beforehand
    COMMIT

The rows are those `save()` writes, under the same lock, held until the commit: positions
follow commit order, as for every other writer, and the NOTIFY wakes the followers when the
chunk commits. A chunk is all or nothing: a decision already in the log (the primary key)
fails the COPY, which rolls back and raises `IntegrityError`; the caller then takes the
existing ones out and copies the rest again.

Measured (50,000 rows, 2 cores shared with other work, so noisy): per 4,000-row chunk the
write took ~45 ms through `append_new`, of which ~20 ms is the server's COPY; each round
trip waited for the parsing thread. With this and the columnar CSV read, the first import
over COPY went from a median 0.21 to 0.28 in ten alternated runs of each.

Measured again inside the import (timestamps per chunk, 50,000 rows): preparing a 4,000-row
chunk takes the main thread 17-20 ms and reading it from the CSV file 5-15 ms more; its write
here 20-30 ms: BEGIN+LOCK+NOTIFY ~1 ms, sending the data and the server's COPY 17-25 ms,
COMMIT 2-3 ms (up to 30 ms while the disk is busy), the backend on the CPU for about half of
it. The writes follow one another 2-8 ms apart: the import is bound by the server's COPY
into the indexed log about as much as by the Python work, and both share the two cores. Cutting
Python work (CSV blocks read as bytes and decoded once: -20 ms; the USCC checks done over the
whole column: -10 ms, out of ~0.31 s of read, parse and encode) and preparing two chunks
ahead instead of one did not move the import's rate: 10-round medians of each, alternated,
stayed within the noise (old 114k-123k rows/s, new 106k-124k), and so did the bench's ratio
(old 0.324, 0.333, 0.340; with the cuts 0.339, 0.320, 0.320). Neither was kept.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import repeat
from typing import Final

import psycopg
from eventsourcing.persistence import IntegrityError

from hub.credit.application import EVENTS_TABLE

APPLICATION_NAME: Final = "hub-import"
_FOUR_BYTES: Final = struct.Struct(">I")
_SIGNATURE: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension
_HEAD: Final = b"\x00\x04\x00\x00\x00\x10"  # four fields; the first, a uuid, 16 bytes


def copy_payload(topic: str, events: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The COPY BINARY data of these (originator id as 16 bytes, stored state) events, each
    version 1 of `topic`: assembled by C-level passes over the rows."""
    encoded = topic.encode()
    middle = b"".join(
        (b"\x00\x00\x00\x08", (1).to_bytes(8, "big"), len(encoded).to_bytes(4, "big"), encoded)
    )
    if not events:
        return _SIGNATURE + b"\xff\xff"
    originators, states = zip(*events, strict=True)
    rows = zip(  # each row's pieces; the constant ones repeat without end
        repeat(_HEAD),
        originators,
        repeat(middle),
        map(_FOUR_BYTES.pack, map(len, states)),
        states,
        strict=False,
    )
    return b"".join((_SIGNATURE, *map(b"".join, rows), b"\xff\xff"))


class LogCopier:
    """A connection of the importer's own that COPYs chunks into `schema`'s credit log.
    Blocking: call it from a worker thread."""

    def __init__(self, database_url: str, schema: str) -> None:
        self.database_url = database_url
        self.table = f'"{schema}".{EVENTS_TABLE}'
        self.name = f"{APPLICATION_NAME}:{schema}"[:63]
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def copy(self, payload: bytes) -> None:
        """Append a chunk (`copy_payload`), committed when this returns; `IntegrityError`
        (nothing written) when a decision in it is already in the log."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = psycopg.connect(
                self.database_url, autocommit=True, application_name=self.name
            )
        columns = "originator_id, originator_version, topic, state"
        try:
            conn.execute(f"BEGIN; LOCK TABLE {self.table} IN EXCLUSIVE MODE; NOTIFY {EVENTS_TABLE}")
            with conn.cursor().copy(
                f"COPY {self.table} ({columns}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(payload)
            conn.execute("COMMIT")
        except psycopg.errors.UniqueViolation as exc:
            conn.execute("ROLLBACK")
            raise IntegrityError(exc) from exc
        except BaseException:
            # In an unknown state (a lost connection, an interrupt): the server rolls back
            # what the closed session had not committed; the next chunk connects again.
            conn.close()
            self._conn = None
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
