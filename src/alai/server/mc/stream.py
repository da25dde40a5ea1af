"""The live stream of Mission Control changes, gapless and resumable, across replicas.

Rows of mc_events are the truth; NOTIFY only wakes readers. Each replica keeps one
LISTEN connection (re-established after a loss) and a wake-up signal that readers
wait on, with a 1 s poll as the safety net for lost notifications and for events
held back by a transaction still running elsewhere.

Gaplessness: neither sequence ids nor transaction ids follow commit order, so a
reader that delivered an event could later see another one "before" it commit. The
stream is therefore ordered by position = (tx, id), where tx is the writing
transaction's id (xid8), and a reader only takes events whose transaction is older
than the oldest transaction still running (`pg_snapshot_xmin`). Every transaction
below that horizon has ended, so the set of events below it is final, and a new event
always lands above every position already delivered. Changes of one task keep their
order because each write locks the task row first, which is what assigns the
transaction id. A client resumes with the last position it saw (or an event id).
The price: a long-running transaction anywhere in the database holds the stream back
until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI
from psycopg import AsyncConnection

from alai.server.mc.service import NOTIFY_CHANNEL
from alai.server.streams import Wakeup, listen_forever
from alai.wire.mc import Event

log = structlog.get_logger("alai.mc.stream")
POLL_SECONDS = 1.0
BATCH = 500

VISIBLE_EVENTS = """
SELECT id, tx::text AS tx, kind, task_id, actor, created_at AS at, payload
FROM mc_events
WHERE (tx, id) > (%s::xid8, %s) AND tx < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY mc_events.tx, mc_events.id  -- the xid8 column, not the text alias: "1001" < "999" as text
LIMIT %s
"""
Position = tuple[int, int]
START: Position = (0, 0)
MAX_TX, MAX_ID = 2**64 - 1, 2**63 - 1  # xid8 and bigint


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
            # A task leaving a watched status is news for whoever watches that status.
            old_status = (event.changes or {}).get("status", [None])[0]
            if old_status not in self.status:
                return False
        if self.assignee is not None and task.assignee != self.assignee:
            return False
        return self.project is None or task.project == self.project


def to_event(row: dict[str, Any]) -> Event:
    payload = row["payload"] or {}
    return Event(id=row["id"], position=f"{row['tx']}-{row['id']}", kind=row["kind"], task_id=row["task_id"], actor=row["actor"], at=row["at"],
                 task=payload.get("task"), comment=payload.get("comment"), changes=payload.get("changes"))


async def visible_events(conn: AsyncConnection, *, after: Position, limit: int = BATCH) -> list[Event]:
    rows = await (await conn.execute(VISIBLE_EVENTS, (str(after[0]), after[1], limit))).fetchall()
    return [to_event(row) for row in rows]


def position_of(event: Event) -> Position:
    tx, _, event_id = event.position.partition("-")
    return int(tx), int(event_id)


async def current_position(conn: AsyncConnection) -> Position:
    """The position of "now": after every event that is final."""
    row = await (await conn.execute(
        "SELECT tx::text AS tx, id FROM mc_events WHERE tx < pg_snapshot_xmin(pg_current_snapshot()) "
        "ORDER BY mc_events.tx DESC, mc_events.id DESC LIMIT 1")).fetchone()
    return (int(row["tx"]), int(row["id"])) if row else START


class BadPosition(ValueError):
    pass


async def parse_position(conn: AsyncConnection, value: str | None) -> Position | None:
    """A resume point from a client: "<tx>-<id>", an event id ("42"; "0" = the beginning), or None (now)."""
    if value is None or value == "":
        return None
    text = value.strip()
    try:
        if "-" in text:
            tx_text, _, id_text = text.partition("-")
            tx, event_id = int(tx_text), int(id_text)
            if not (0 <= tx <= MAX_TX and 0 <= event_id <= MAX_ID):
                raise ValueError("out of range")
            return tx, event_id
        event_id = int(text)
        if event_id > MAX_ID:
            raise ValueError("out of range")
    except ValueError:
        raise BadPosition(f"{value!r} is not an event position or id") from None
    if event_id <= 0:
        return START
    row = await (await conn.execute("SELECT tx::text AS tx FROM mc_events WHERE id = %s", (event_id,))).fetchone()
    if row is None:
        raise BadPosition(f"there is no event {event_id}")
    return int(row["tx"]), event_id


@contextlib.asynccontextmanager
async def stream_lifespan(app: FastAPI) -> AsyncIterator[None]:
    wakeup = Wakeup()
    app.state.mc_wakeup = wakeup
    conninfo = app.state.settings.database_url.get_secret_value()
    listener = asyncio.create_task(listen_forever(conninfo, NOTIFY_CHANNEL, wakeup), name="mc-listen")
    try:
        yield
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(listener, 5)


async def follow(app: FastAPI, *, after: Position | None, where: EventFilter) -> AsyncIterator[Event | None]:
    """Events after `after` (None: from now), forever. Yields None as a keep-alive tick."""
    wakeup: Wakeup = app.state.mc_wakeup
    pool = app.state.pool
    if after is None:
        async with pool.connection() as conn:
            after = await current_position(conn)
    while True:
        # Taken before the query: a wake-up that lands while we read is not lost.
        generation = wakeup.generation
        async with pool.connection() as conn:
            batch = await visible_events(conn, after=after)
        for event in batch:
            after = position_of(event)
            if where.matches(event):
                yield event
        if len(batch) == BATCH:
            continue  # more is waiting; no need to sleep
        await wakeup.wait(generation, POLL_SECONDS)
        yield None
