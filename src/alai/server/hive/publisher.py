"""Group commit for HiveMind publishes: many concurrent publishes, one transaction.

A commit costs a WAL flush and a round trip whatever it holds, so one transaction per
message caps a replica at a few hundred messages a second. Publishes (HTTP or the
publishing WebSocket) are checked and encoded by their request, then queued; writer
tasks take everything queued (up to `max_messages`) and store it in one transaction
(service.publish_groups), and each request gets its own ids once that has committed.
While one group commits the next one gathers, so the more load, the larger the
groups. At low load a group is a single message: nothing waits for company.

A group that fails on its data (which the checks before queueing should prevent) is
retried one request at a time, so only the bad request fails. Publishes with an
Idempotency-Key do not come here: their record must commit with their messages, in
a transaction of their own (routes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from alai.server.hive import service
from alai.server.problems import ProblemError
from alai.wire.hive import Published

log = structlog.get_logger("alai.hive.publisher")
DATA_ERRORS = (errors.DataError, errors.IntegrityError)


@dataclass(eq=False)
class _Pending:
    group: service.Group
    future: asyncio.Future


@dataclass(eq=False)
class GroupPublisher:
    pool: AsyncConnectionPool
    on_commit: Callable[[], None]  # wakes subscribers (the notifier's mark)
    writers: int = 1
    max_messages: int = 2000
    _queue: deque[_Pending] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stopping: bool = False

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name=f"hive-publisher-{n}") for n in range(self.writers)]

    async def stop(self) -> None:
        """Stores what is queued, then stops the writers."""
        self._stopping = True
        self._ready.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(asyncio.shield(task), 10)
            except (TimeoutError, Exception):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(ProblemError(503, "the server is stopping; publish again",
                                                          slug="unavailable"))
        self._queue.clear()

    async def publish(self, group: service.Group) -> Published:
        """Stores one request's messages (already checked by service.prepare); returns
        after they have committed."""
        return await self.submit(group)

    def submit(self, group: service.Group) -> asyncio.Future:
        """Queues one request's messages; the future resolves once they have committed
        (a future, not a task: the publishing WebSocket submits one per frame)."""
        future = asyncio.get_running_loop().create_future()
        if self._stopping:
            future.set_exception(ProblemError(503, "the server is stopping; publish again", slug="unavailable"))
            return future
        self._queue.append(_Pending(group, future))
        self._ready.set()
        return future

    def _take(self) -> list[_Pending]:
        taken, count = [], 0
        while self._queue and (not taken or count + len(self._queue[0].group.messages) <= self.max_messages):
            pending = self._queue.popleft()
            if pending.future.done():  # the request went away before it was written
                continue
            taken.append(pending)
            count += len(pending.group.messages)
        return taken

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            batch = self._take()
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            results = await self._store([pending.group for pending in batch])
        except DATA_ERRORS:
            if len(batch) > 1:  # find the culprit: one request at a time
                for pending in batch:
                    await self._write([pending])
                return
            self._fail(batch, ProblemError(422, "the message could not be stored; check its payload",
                                           slug="bad-payload"))
            return
        except Exception as error:
            log.warning("hive publish failed", error=str(error).splitlines()[0] if str(error) else repr(error))
            self._fail(batch, ProblemError(503, "the database is unavailable; publish again shortly",
                                           slug="unavailable"))
            return
        self.on_commit()
        for pending, published in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(published)

    async def _store(self, groups: list[service.Group]) -> list[Published]:
        # One statement in autocommit mode: one round trip, commit included.
        async with self.pool.connection(timeout=5) as conn:
            return await service.publish_groups(conn, groups)

    @staticmethod
    def _fail(batch: list[_Pending], error: Exception) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(error)
