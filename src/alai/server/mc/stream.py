"""The live stream of Mission Control changes, gapless and resumable, across replicas.

Rows of mc_events are the truth; NOTIFY only wakes readers. Each replica keeps one
LISTEN connection (re-established after a loss) and a wake-up signal that readers
wait on, with a 1 s poll as the safety net for lost notifications and for events
held back by a transaction still running elsewhere.

Gaplessness: ids come from an identity sequence, so a transaction can commit an
event with a smaller id after another one with a larger id was already visible. A
reader therefore only takes events whose writing transaction (`tx`) is older than
the oldest transaction still running (`pg_snapshot_xmin`): nothing with a smaller id
can appear after that. Delivery is in id order; a client resumes with the last id it
saw. The price: a long-running transaction anywhere in the database holds the stream
back until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from fastapi import FastAPI
from psycopg import AsyncConnection

from alai.server.mc.service import NOTIFY_CHANNEL
from alai.wire.mc import Event

log = structlog.get_logger("alai.mc.stream")
POLL_SECONDS = 1.0
BATCH = 500

VISIBLE_EVENTS = """
SELECT id, kind, task_id, actor, created_at AS at, payload
FROM mc_events
WHERE id > %s AND tx < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY id
LIMIT %s
"""


@dataclass(frozen=True)
class EventFilter:
    status: frozenset[str] | None = None
    assignee: str | None = None
    project: str | None = None

    def matches(self, event: Event) -> bool:
        task = event.task
        if task is None:
            return self.status is None and self.assignee is None and self.project is None
        if self.status is not None and task.status not in self.status:
            return False
        if self.assignee is not None and task.assignee != self.assignee:
            return False
        return self.project is None or task.project == self.project


def to_event(row: dict[str, Any]) -> Event:
    payload = row["payload"] or {}
    return Event(id=row["id"], kind=row["kind"], task_id=row["task_id"], actor=row["actor"], at=row["at"],
                 task=payload.get("task"), comment=payload.get("comment"), changes=payload.get("changes"))


async def visible_events(conn: AsyncConnection, *, after: int, limit: int = BATCH) -> list[Event]:
    rows = await (await conn.execute(VISIBLE_EVENTS, (after, limit))).fetchall()
    return [to_event(row) for row in rows]


async def latest_event_id(conn: AsyncConnection) -> int:
    row = await (await conn.execute("SELECT coalesce(max(id), 0) AS id FROM mc_events")).fetchone()
    return int(row["id"])


class Wakeup:
    """A generation counter readers wait on; bumped by NOTIFY and by the poll timer."""

    def __init__(self) -> None:
        self._condition = asyncio.Condition()
        self.generation = 0

    async def bump(self) -> None:
        async with self._condition:
            self.generation += 1
            self._condition.notify_all()

    async def wait(self, seen: int, timeout: float) -> int:
        async with self._condition:
            if self.generation == seen:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._condition.wait(), timeout)
            return self.generation


async def _listen_forever(app: FastAPI, wakeup: Wakeup) -> None:
    conninfo = app.state.settings.database_url.get_secret_value()
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                await wakeup.bump()  # anything committed while we were away
                async for _ in conn.notifies():
                    await wakeup.bump()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # database restart: listen again shortly
            log.warning("mc stream listener lost its connection", error=str(error).splitlines()[0] if str(error) else "")
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def stream_lifespan(app: FastAPI) -> AsyncIterator[None]:
    wakeup = Wakeup()
    app.state.mc_wakeup = wakeup
    listener = asyncio.create_task(_listen_forever(app, wakeup), name="mc-listen")
    try:
        yield
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(listener, 5)


async def follow(app: FastAPI, *, after: int | None, where: EventFilter) -> AsyncIterator[Event | None]:
    """Events after `after` (None: from now), forever. Yields None as a keep-alive tick."""
    wakeup: Wakeup = app.state.mc_wakeup
    pool = app.state.pool
    if after is None:
        async with pool.connection() as conn:
            after = await latest_event_id(conn)
    while True:
        # Taken before the query: a wake-up that lands while we read is not lost.
        generation = wakeup.generation
        async with pool.connection() as conn:
            batch = await visible_events(conn, after=after)
        for event in batch:
            after = event.id
            if where.matches(event):
                yield event
        if len(batch) == BATCH:
            continue  # more is waiting; no need to sleep
        await wakeup.wait(generation, POLL_SECONDS)
        yield None
