"""Group commit for commands: concurrent requests share one transaction.

Requests put commands on a queue; one writer thread takes everything queued, runs each
command against a shared unit of work and saves all new events with one `app.save()`, so
32 concurrent listings cost one lock, one insert and one fsync instead of 32. A refusal
(`HubError`) answers only its own request. If the batch cannot be saved (a concurrent writer
in another process, a repeat of an existing decision), every command runs again alone,
carefully, so a bad neighbour never fails a good command.

Up to `max_inflight` batches are written at once, each on its own thread and connection:
while one batch waits for its commit (the fsync), the next one is already built and waiting
for the events table's lock, so the database never waits for Python between two commits.
The lock still orders them: positions follow commit order. A command in the later batch may
read an aggregate that the earlier one is changing; its save then fails on the primary key
and it runs again alone, as with a writer in another process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from eventsourcing.persistence import IntegrityError

from hub.clock import Clock
from hub.credit.application import CreditApplication, UnitOfWork
from hub.errors import Conflict, HubError, Unavailable
from hub.metrics import COMMIT_BATCH, EVENTS_APPENDED

log = structlog.get_logger(__name__)

Command = Callable[[UnitOfWork], Any]
RETRIES = 3


@dataclass
class _Item:
    command: Command
    future: asyncio.Future[tuple[Any, int]]
    loop: asyncio.AbstractEventLoop = field(repr=False)


@dataclass
class _Outcome:
    item: _Item
    result: Any = None
    error: BaseException | None = None
    events: list[object] = field(default_factory=list)


class Committer:
    def __init__(
        self, app: CreditApplication, clock: Clock, *, max_batch: int = 256, max_inflight: int = 2
    ) -> None:
        self.app = app
        self.clock = clock
        self.max_batch = max_batch
        self.max_inflight = max_inflight
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()
        self.on_commit: Callable[[], None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="committer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for write in list(self._writes):
            write.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await write

    async def submit(self, command: Command) -> tuple[Any, int]:
        """Run `command` in a batch; returns its result and the position of its last event."""
        loop = asyncio.get_running_loop()
        item = _Item(command, loop.create_future(), loop)
        await self._queue.put(item)
        return await item.future

    async def _loop(self) -> None:
        writers = asyncio.Semaphore(self.max_inflight)
        while True:
            await writers.acquire()  # while every writer is busy, requests gather in the queue
            try:
                items = [await self._queue.get()]
            except BaseException:
                writers.release()
                raise
            while len(items) < self.max_batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            write = asyncio.create_task(self._write(items, writers))
            self._writes.add(write)
            write.add_done_callback(self._writes.discard)

    async def _write(self, items: list[_Item], writers: asyncio.Semaphore) -> None:
        try:
            outcomes = await asyncio.to_thread(self._run_batch, items)
        except Exception as exc:  # the database is down: fail this batch, keep serving
            writers.release()
            log.exception("commit_failed", batch=len(items))
            error = Unavailable(f"the credit log cannot be written now: {exc}", retry_after=1)
            for item in items:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        except BaseException:
            writers.release()
            raise
        writers.release()
        for outcome in outcomes:
            self._answer(outcome)
        if self.on_commit is not None:
            self.on_commit()

    @staticmethod
    def _answer(outcome: _Outcome) -> None:
        future = outcome.item.future
        if future.done():
            return
        if outcome.error is not None:
            future.set_exception(outcome.error)
        else:
            future.set_result(outcome.result)

    def _run_batch(self, items: list[_Item]) -> list[_Outcome]:
        COMMIT_BATCH.observe(len(items))
        try:  # a new decision needs no read first: its primary key says if it exists
            return self._attempt(items, optimistic=True)
        except IntegrityError:
            log.info("batch_conflict_retrying_alone", batch=len(items))
        return [self._run_alone(item) for item in items]

    def _run_alone(self, item: _Item) -> _Outcome:
        for _ in range(RETRIES):
            try:
                return self._attempt([item], optimistic=False)[0]
            except IntegrityError:
                continue
        return _Outcome(item, error=Conflict("the listing changed concurrently; try again"))

    def _attempt(self, items: list[_Item], *, optimistic: bool) -> list[_Outcome]:
        uow = UnitOfWork(self.app, self.clock.now(), optimistic=optimistic)
        outcomes: list[_Outcome] = []
        for item in items:
            uow.begin_command()
            try:
                result = item.command(uow)
            except HubError as exc:
                outcomes.append(_Outcome(item, error=exc))
                continue
            outcomes.append(_Outcome(item, result=result, events=list(uow.command_events())))
        aggregates = uow.aggregates()
        positions: dict[int, int] = {}
        if aggregates:
            recordings = self.app.save(*aggregates)
            EVENTS_APPENDED.inc(len(recordings))
            positions = {id(r.domain_event): r.notification.id for r in recordings}
        for outcome in outcomes:
            if outcome.error is None:
                last = max((positions[id(e)] for e in outcome.events), default=0)
                outcome.result = (outcome.result, last)
        return outcomes
