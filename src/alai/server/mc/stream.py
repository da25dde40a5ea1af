"""The live stream of Mission Control changes, gapless and resumable, across replicas.

Rows of mc_events are the truth; NOTIFY only wakes readers. Each replica runs one
`alai.server.streams.Hub` over mc_events: one LISTEN connection, one reader, a fan-out
to every subscriber's bounded queue (see that module).

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

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI
from psycopg import AsyncConnection

from alai.server import streams
from alai.server.mc.service import NOTIFY_CHANNEL
from alai.wire.mc import Event

log = structlog.get_logger("alai.mc.stream")
POLL_SECONDS = 1.0
BATCH = 500
SUBSCRIBER_BUFFER = 1000

VISIBLE_EVENTS = """
SELECT id, tx::text AS tx, kind, task_id, actor, created_at AS at, payload
FROM mc_events
WHERE (tx, id) > (%s::xid8, %s) AND tx < pg_snapshot_xmin(pg_current_snapshot())
ORDER BY tx, id
LIMIT %s
"""
Position = streams.Position
START = streams.START


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
        "ORDER BY tx DESC, id DESC LIMIT 1")).fetchone()
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
            return streams.parse_position_text(text)
        event_id = int(text)
        if event_id > streams.MAX_ID:
            raise ValueError("out of range")
    except ValueError:
        raise BadPosition(f"{value!r} is not an event position or id") from None
    if event_id <= 0:
        return START
    row = await (await conn.execute("SELECT tx::text AS tx FROM mc_events WHERE id = %s", (event_id,))).fetchone()
    if row is None:
        raise BadPosition(f"there is no event {event_id}")
    return int(row["tx"]), event_id


def _source() -> streams.Source[Event]:
    async def fetch(conn: AsyncConnection, after: Position, limit: int) -> list[Event]:
        return await visible_events(conn, after=after, limit=limit)

    return streams.Source(name="mc", channel=NOTIFY_CHANNEL, fetch=fetch, position_of=position_of,
                          current=current_position)


@contextlib.asynccontextmanager
async def stream_lifespan(app: FastAPI) -> AsyncIterator[None]:
    hub: streams.Hub[Event] = streams.Hub(
        source=_source(), pool=app.state.pool, conninfo=app.state.settings.database_url.get_secret_value(),
        buffer=SUBSCRIBER_BUFFER, batch=BATCH, poll_seconds=POLL_SECONDS,
    )
    await hub.start()
    app.state.mc_hub = hub
    try:
        yield
    finally:
        await hub.stop()


async def follow(app: FastAPI, *, after: Position | None, where: EventFilter) -> AsyncIterator[Event | None]:
    """Events after `after` (None: from now), forever; None as a keep-alive tick.
    Raises streams.Overflow when the client cannot keep up."""
    async for event in app.state.mc_hub.subscribe(after=after, accepts=where.matches):
        yield event
