"""Group append of new listings: concurrent registrations share one round trip and one commit.

A new decision needs no aggregate read: its first event is known in full from the request,
and the events table's primary key (originator id, version 1) says whether the decision is
already in the log. So `POST /v1/listings` appends through this appender instead of the
committer: each request puts (listing id, stored state) on a queue; a writer takes all that
is queued and appends it with ONE statement, a server-side function
(`hub_append_first`, created at schema set-up) that takes the events table's lock
(`LOCK TABLE ... IN EXCLUSIVE MODE`, as eventsourcing's `save()` does, so positions follow
commit order), notifies the listeners, and inserts the rows with `ON CONFLICT DO NOTHING`,
returning the position of each row it wrote. The statement runs in its own implicit
transaction, so the answer comes back after the commit: a 2xx is a durable listing.

Why a function, on asyncpg, on the event loop: the lock is held from the function's start to
the commit, and nothing else. A transaction driven from Python (BEGIN, LOCK, INSERT,
COMMIT) holds the lock across four round trips, each of which waits for the client process to
be scheduled, and a thread of a busy server waits for the GIL as well: measured here, the
table was "idle in transaction" for most of the time it was locked. With one round trip the
table is locked only while PostgreSQL works.

A decision the function did not write (it was already in the log, or the same decision
came twice in one group) answers None: the caller then reads the listing and answers as
for a repeat (the same content) or a conflict (other content). Up to `max_inflight` groups
are in flight at once, each on its own connection. The default is one: while it commits,
the next group gathers, and larger groups cost less per listing (a round trip costs about
100 µs of CPU here); with two in flight the groups halved and the server, CPU-bound at 32
clients, answered fewer listings (bench runs: 10,500-12,500/s with one, 6,700-11,000/s with
two). A group that cannot be written (the database is down) fails its requests with 503;
nothing is half-written, the statement is one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import structlog

from hub.errors import Unavailable
from hub.metrics import COMMIT_BATCH, EVENTS_APPENDED

log = structlog.get_logger(__name__)

FUNCTION = "hub_append_first"
APPLICATION_NAME = "hub-appender"
APPEND_TIMEOUT = 30.0
"""Seconds a group may take before its requests get 503 (a wedged connection must not hold
every new listing; a group that committed just before is found again by its repeat)."""


def function_ddl(schema: str, table: str) -> str:
    """`CREATE OR REPLACE` of the append function for `schema`.`table` (run under the set-up
    lock: concurrent replacements of one function conflict)."""
    return f"""
CREATE OR REPLACE FUNCTION "{schema}".{FUNCTION}(p_ids uuid[], p_topic text, p_states bytea[])
RETURNS TABLE (listing_id uuid, listing_position bigint)
LANGUAGE plpgsql AS $fn$
BEGIN
    LOCK TABLE "{schema}".{table} IN EXCLUSIVE MODE;
    NOTIFY {table};
    RETURN QUERY
    INSERT INTO "{schema}".{table} AS e (originator_id, originator_version, topic, state)
    SELECT u.i, 1, p_topic, u.s FROM unnest(p_ids, p_states) WITH ORDINALITY AS u(i, s, n)
    ORDER BY u.n
    ON CONFLICT DO NOTHING
    RETURNING e.originator_id, e.notification_id;
END
$fn$"""


def _fail(items: tuple[_Item, ...], exc: Exception) -> None:
    error = Unavailable(f"the credit log cannot be written now: {exc}", retry_after=1)
    for item in items:
        if not item.future.done():
            item.future.set_exception(error)


@dataclass
class _Item:
    listing_id: str
    state: bytes
    future: asyncio.Future[int | None] = field(repr=False)


class Appender:
    """Appends the first events of new listings, grouped (see the module's docstring)."""

    def __init__(
        self,
        database_url: str,
        schema: str,
        topic: str,
        *,
        max_batch: int = 512,
        max_inflight: int = 1,
    ) -> None:
        self.database_url = database_url
        self.schema = schema
        self.topic = topic
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self.on_commit: Callable[[], None] | None = None
        self._sql = f'SELECT listing_id, listing_position FROM "{schema}".{FUNCTION}($1, $2, $3)'
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._connections: asyncio.Queue[asyncpg.Connection | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self._event_loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Open the connections (one per group in flight; not a pool, whose release costs a
        reset round trip per group) and start writing."""
        self._event_loop = asyncio.get_running_loop()  # once: on 3.11 each call is a getpid()
        for _ in range(self.max_inflight):
            self._connections.put_nowait(await self._connect())
        self._task = asyncio.create_task(self._loop(), name="appender")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for write in list(self._writes):  # groups already sent finish: their callers wait
            with contextlib.suppress(Exception):
                await write
        while not self._queue.empty():  # never sent: nothing written, say so
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(Unavailable("the hub is stopping", retry_after=1))
        while not self._connections.empty():
            connection = self._connections.get_nowait()
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close()

    @property
    def running(self) -> bool:
        """Whether it is started (a hub used without `Hub.start`, as some tools and tests
        use it, writes new listings through its committer instead)."""
        return self._task is not None

    async def _connect(self) -> asyncpg.Connection:
        """A connection named for `pg_stat_activity` (`application_name`)."""
        name = f"{APPLICATION_NAME}:{self.schema}"[:63]
        return await asyncpg.connect(self.database_url, server_settings={"application_name": name})

    async def append(self, listing_id: str, state: bytes) -> int | None:
        """Append a new listing's first event: its log position once committed, or None when
        the decision is already in the log (nothing written)."""
        loop = self._event_loop
        if self._task is None or loop is None:
            raise Unavailable("the credit log is not open for writing here", retry_after=1)
        item = _Item(listing_id, state, loop.create_future())
        self._queue.put_nowait(item)
        return await item.future

    async def _loop(self) -> None:
        queue = self._queue
        while True:
            connection = await self._connections.get()  # while all are busy, requests gather
            try:
                first = await queue.get()
            except BaseException:
                self._connections.put_nowait(connection)
                raise
            # One more turn of the loop first: requests whose bytes have already arrived are
            # parsed and join this group (16 instead of 15 at 32 clients; bench runs, in turn
            # with and without: 1.07-1.27 and 0.86-1.02 of raw inserts).
            await asyncio.sleep(0)
            group = {first.listing_id: first}
            repeats: list[_Item] = []
            while len(group) < self.max_batch and not queue.empty():
                item = queue.get_nowait()
                if item.listing_id in group:
                    repeats.append(item)  # answered None once its first is written
                else:
                    group[item.listing_id] = item
            write = asyncio.create_task(self._write(connection, group, repeats))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    async def _write(
        self,
        connection: asyncpg.Connection | None,
        group: dict[str, _Item],
        repeats: list[_Item],
    ) -> None:
        try:
            if connection is None or connection.is_closed():  # lost with an earlier group
                connection = None
                connection = await self._connect()
            rows = await connection.fetch(
                self._sql,
                list(group),
                self.topic,
                [item.state for item in group.values()],
                timeout=APPEND_TIMEOUT,
            )
        except Exception as exc:  # the database is down: fail this group, keep serving
            log.exception("append_failed", batch=len(group))
            if connection is not None:
                connection.terminate()  # in an unknown state: the next group reconnects
            connection = None
            _fail((*group.values(), *repeats), exc)
            return
        finally:
            self._connections.put_nowait(connection)
        COMMIT_BATCH.observe(len(group))
        EVENTS_APPENDED.inc(len(rows))
        for listing_id, position in rows:
            item = group.pop(str(listing_id))
            if not item.future.done():
                item.future.set_result(position)
        for item in (*group.values(), *repeats):  # already in the log
            if not item.future.done():
                item.future.set_result(None)
        if rows and self.on_commit is not None:
            self.on_commit()
