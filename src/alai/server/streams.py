"""Live, gapless, resumable streams out of a PostgreSQL table, shared by the modules.

A stream is a table of rows carrying a position (tx xid8, id): the writing
transaction's id and the row's id. Readers take rows in position order, and only
rows whose transaction is older than every transaction still running
(`tx < pg_snapshot_xmin(pg_current_snapshot())`): every transaction below that
horizon has ended, so nothing new can ever appear below a position already
delivered — whatever order writers commit in, on whichever replica.

The horizon is taken in the statement that reads the rows: `pg_current_snapshot()`
is that statement's own snapshot (GetActiveSnapshot), so every transaction below its
xmin has ended and, if it committed, is visible to the very scan that filters on it —
one round trip per read. Rows are ordered by the table's xid8 column — never by a
`tx::text` alias, which sorts "1001" before "999" (the bug behind the reordering
first blamed on the hub).

Per replica, one Hub per stream: a LISTEN connection (re-established after a loss)
sets a dirty flag; one pump reads what is new once per wake-up (NOTIFY is only a
wake-up, and many wake-ups fold into one read; a poll every second covers lost
ones) and fans it out to the subscribers' bounded queues. A subscriber resuming from
an older position catches up from the table first, then joins the live fan-out with
nothing missed or repeated. A subscriber whose queue overflows is cut off (told
where to resume) instead of slowing anyone down. A live subscriber may give a sink
that takes chunks straight from the fan-out while its connection keeps up (WebSocket
frames written at once: server/ws_direct.py); what the sink refuses goes through
the queue as above.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger("alai.streams")
Position = tuple[int, int]
START: Position = (0, 0)
T = TypeVar("T")


def format_position(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


MAX_TX = 2**64 - 1
MAX_ID = 2**63 - 1


def parse_position_text(text: str) -> Position:
    """"<tx>-<id>" → (tx, id); ValueError unless both are in range (xid8, bigint)."""
    tx_text, _, id_text = text.strip().partition("-")
    tx, row_id = int(tx_text), int(id_text)
    if not (0 <= tx <= MAX_TX and 0 <= row_id <= MAX_ID):
        raise ValueError("position out of range")
    return tx, row_id


@dataclass(frozen=True)
class Source(Generic[T]):
    """How to read one stream table."""

    name: str
    channel: str  # the NOTIFY channel writers signal
    # Rows after a position, in position order, only those below the xmin horizon.
    fetch: Callable[[AsyncConnection, Position, int], Awaitable[list[T]]]
    position_of: Callable[[T], Position]
    # The position of "now" (after every final row).
    current: Callable[[AsyncConnection], Awaitable[Position]]


class Overflow(Exception):
    """The subscriber fell too far behind; it resumes from the last position it got."""


@dataclass(eq=False)
class Chunk(Generic[T]):
    """Rows fanned out together. Subscribers with the same filter share one chunk, so
    what is made of it (a JSON array, a WebSocket frame) is made once for all."""

    rows: list[T]
    _made: dict[str, Any] | None = None

    def json_array(self, encode: Callable[[T], str]) -> str:
        return self.once("json-array", lambda chunk: "[" + ",".join(encode(row) for row in chunk.rows) + "]")

    def once(self, name: str, make: Callable[[Chunk[T]], Any]) -> Any:
        """`make(self)`, made once per chunk under `name` and shared by its subscribers."""
        if self._made is None:
            self._made = {}
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = make(self)
        return made


TICK: Chunk = Chunk([])  # the hub's keep-alive (see Hub._tick)
END: Chunk = Chunk([])  # the hub has stopped: subscriptions end


@dataclass(eq=False)
class _Subscription(Generic[T]):
    accepts: Callable[[T], bool]
    key: Any  # subscriptions with the same (non-None) key have the same filter
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    pending: int = 0  # rows queued, bounded by the hub's buffer
    overflowed: bool = False
    # Live rows at or below this are not for this subscriber (it resumed from a position
    # the hub had not reached); None once live rows are past it.
    skip_through: Position | None = None
    # Set while the subscriber is live and its connection can take writes at once: the
    # fan-out hands chunks straight to it (see Hub.subscribe_chunks' `sink`).
    sink: Callable[[Chunk], bool] | None = None


@dataclass(eq=False)
class Hub(Generic[T]):
    source: Source[T]
    pool: AsyncConnectionPool
    conninfo: str
    buffer: int = 1000
    batch: int = 500
    poll_seconds: float = 1.0
    # After a read that found rows, the next read waits this long: under load, rows
    # gather into fewer, larger chunks (fewer frames per subscriber); an idle stream's
    # first row still goes out at once.
    min_gap: float = 0.0
    # None until the hub has learnt where "now" is (the database may be away at start).
    position: Position | None = None
    _subscriptions: set[_Subscription[T]] = field(default_factory=set)
    _dirty: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stopped: bool = False
    # Chunks handed to subscribers, by path (for /metrics): straight to a sink, or queued.
    direct_chunks: int = 0
    queued_chunks: int = 0

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            async with self.pool.connection(timeout=5) as conn:
                self.position = await self.source.current(conn)
        self._tasks = [asyncio.create_task(self._listen(), name=f"{self.source.name}-listen"),
                       asyncio.create_task(self._pump(), name=f"{self.source.name}-pump"),
                       asyncio.create_task(self._tick(), name=f"{self.source.name}-tick")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        # Without the ticker nothing would wake a subscriber again: end every subscription.
        self._stopped = True
        for subscription in self._subscriptions:
            subscription.queue.put_nowait(END)

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {self.source.channel}")
                    self._dirty.set()  # whatever committed while we were not listening
                    async for _ in conn.notifies():
                        self._dirty.set()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # a database restart: listen again shortly
                log.warning("stream listener lost its connection", stream=self.source.name,
                            error=str(error).splitlines()[0] if str(error) else repr(error))
                await asyncio.sleep(1.0)

    async def _pump(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.poll_seconds)
            self._dirty.clear()
            try:
                while True:
                    async with self.pool.connection(timeout=5) as conn:
                        if self.position is None:
                            self.position = await self.source.current(conn)
                        if not self._subscriptions:
                            # Nobody to deliver to: move to "now" without reading the rows
                            # (run states are published whether anyone listens or not) —
                            # unless someone attached meanwhile, at the old position.
                            now = await self.source.current(conn)
                            if not self._subscriptions:
                                self.position = max(self.position, now)
                                break
                        rows = await self.source.fetch(conn, self.position, self.batch)
                    self._fan_out(rows)
                    if len(rows) < self.batch:
                        if rows and self.min_gap:
                            await asyncio.sleep(self.min_gap)
                        break
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("stream read failed", stream=self.source.name, error=str(error))

    async def _tick(self) -> None:
        """An empty chunk every `poll_seconds` to each subscriber with nothing queued: its
        keep-alive, and its moment to notice an overflow. One task for all, instead of a
        timeout around every subscriber's every wait (a few per cent of a busy hub's CPU)."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            for subscription in self._subscriptions:
                if subscription.queue.empty():
                    subscription.queue.put_nowait(TICK)

    def _fan_out(self, rows: list[T]) -> None:
        # No await in here: a subscriber attaching sees every row either fanned out to
        # it or not yet read, never half of a row.
        if not rows:
            return
        self.position = self.source.position_of(rows[-1])
        shared: dict[Any, Chunk[T]] = {}
        for subscription in self._subscriptions:
            if subscription.overflowed:
                continue
            chunk = shared.get(subscription.key) if subscription.key is not None else None
            if chunk is None:
                chunk = Chunk([row for row in rows if subscription.accepts(row)])
                if subscription.key is not None:
                    shared[subscription.key] = chunk
            if not chunk.rows:
                continue
            if subscription.sink is not None:
                try:
                    if subscription.sink(chunk):
                        self.direct_chunks += 1
                        continue
                except Exception as error:  # the sink's own failure: its subscriber's normal path reports it
                    log.warning("stream sink failed", stream=self.source.name, error=repr(error))
                # It cannot take writes now: this chunk and those after it go through the
                # queue, bounded by the buffer, until the subscriber has caught up again.
                subscription.sink = None
            if subscription.pending + len(chunk.rows) > self.buffer:
                subscription.overflowed = True
                continue
            subscription.pending += len(chunk.rows)
            subscription.queue.put_nowait(chunk)
            self.queued_chunks += 1

    async def subscribe(self, *, after: Position | None, accepts: Callable[[T], bool],
                        key: Any = None) -> AsyncIterator[T | None]:
        """Rows after `after` (None: from now), forever; None now and then as a keep-alive tick.

        Raises Overflow when the consumer falls more than `buffer` rows behind."""
        async for chunk in self.subscribe_chunks(after=after, accepts=accepts, key=key):
            if not chunk.rows:
                yield None
            for row in chunk.rows:
                yield row

    async def subscribe_chunks(self, *, after: Position | None, accepts: Callable[[T], bool],
                               key: Any = None, sink: Callable[[Chunk[T]], bool] | None = None,
                               ) -> AsyncIterator[Chunk[T]]:
        """As `subscribe`, a chunk at a time (an empty one as the keep-alive tick). `key`
        names the filter: subscribers with equal keys share chunks.

        `sink(chunk)`, when given, delivers a chunk at once or returns False (its
        connection cannot take more now). While the subscriber is live with nothing
        queued, the fan-out calls it directly, in order, without waking the subscriber's
        task (per chunk and subscriber, that wake-up and its send cost more than the
        write itself); chunks it refuses are queued and come out of this iterator as
        usual, and the sink is used again once they are through."""
        while self.position is None and not self._stopped:  # the hub has not reached the database yet
            await asyncio.sleep(self.poll_seconds)
            yield Chunk([])
        if self._stopped:
            return
        subscription: _Subscription[T] = _Subscription(accepts=accepts, key=key)
        self._subscriptions.add(subscription)
        attached_at = self.position
        try:
            if after is not None and after < attached_at:
                async for rows in self._catch_up(after, attached_at, accepts):
                    yield Chunk(rows)
            elif after is not None:
                subscription.skip_through = after  # the client is ahead of this replica's hub
            while True:
                if (sink is not None and subscription.sink is None and subscription.skip_through is None
                        and not subscription.overflowed and subscription.queue.empty()):
                    subscription.sink = sink  # everything before has been consumed: in order from here
                chunk = await subscription.queue.get()
                if chunk is END:
                    return
                if chunk is TICK:
                    # A tick may sit ahead of live chunks (queued while the subscriber was
                    # busy): an overflowed subscriber gets what is queued before being cut off.
                    if subscription.overflowed and subscription.queue.empty():
                        raise Overflow
                    yield Chunk([])
                    continue
                subscription.pending -= len(chunk.rows)
                if subscription.skip_through is not None:
                    skip = subscription.skip_through
                    if self.source.position_of(chunk.rows[0]) <= skip:
                        chunk = Chunk([row for row in chunk.rows if self.source.position_of(row) > skip])
                    else:  # live rows are past it from here on
                        subscription.skip_through = None
                if chunk.rows:
                    yield chunk
                if subscription.overflowed and subscription.queue.empty():
                    raise Overflow
        finally:
            self._subscriptions.discard(subscription)

    async def _catch_up(self, after: Position, until: Position,
                        accepts: Callable[[T], bool]) -> AsyncIterator[list[T]]:
        cursor = after
        while cursor < until:
            async with self.pool.connection() as conn:
                rows = await self.source.fetch(conn, cursor, self.batch)
            if not rows:
                return
            chosen = []
            for row in rows:
                position = self.source.position_of(row)
                if position > until:
                    break
                cursor = position
                if accepts(row):
                    chosen.append(row)
            if chosen:
                yield chosen
            if rows and self.source.position_of(rows[-1]) > until:
                return


# The reading statement's own snapshot's xmin (see the module docstring); a scalar
# subquery, so it is evaluated once, at execution, under that statement's snapshot.
HORIZON = "(SELECT pg_snapshot_xmin(pg_current_snapshot()))"


async def final_rows(conn: AsyncConnection, *, table: str, columns: str, after: Position, limit: int,
                     where: str = "", params: tuple = ()) -> list:
    """Rows of `table` (a constant name) after `after`, in position order, below the horizon;
    `where` (a constant condition, with `params`) narrows them, e.g. to one run's events."""
    cursor = await conn.execute(
        f"SELECT {columns} FROM {table} WHERE {where + ' AND ' if where else ''}"
        f"(tx, id) > (%s::xid8, %s) AND tx < {HORIZON} "
        # The table's xid8 column, not a `tx::text AS tx` alias: as text "1001" < "999".
        f"ORDER BY {table}.tx, {table}.id LIMIT %s", (*params, str(after[0]), after[1], limit))
    return await cursor.fetchall()


async def current_position_of(conn: AsyncConnection, table: str) -> Position:
    """The position of "now" in `table` (a constant table name): after every final row."""
    row = await (await conn.execute(
        f"SELECT tx::text AS tx, id FROM {table} WHERE tx < {HORIZON} ORDER BY {table}.tx DESC, {table}.id DESC "
        "LIMIT 1")).fetchone()
    if row is None:
        return START
    values: dict[str, Any] = row if isinstance(row, dict) else {"tx": row[0], "id": row[1]}
    return int(values["tx"]), int(values["id"])


@dataclass(eq=False)
class Notifier:
    """Coalesced wake-ups for writers that commit often: many commits, one NOTIFY.

    Writers call `mark()` after their commit; a task sends NOTIFY on its own connection
    at most every `min_gap` seconds while there is something new. Sending NOTIFY inside
    every writing transaction would cap the commit rate (each NOTIFY serialises on a
    global lock at commit).
    """

    channel: str
    conninfo: str
    min_gap: float = 0.005
    local: Hub | None = None  # this replica's own hub is woken directly
    _pending: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None

    def mark(self) -> None:
        self._pending.set()
        if self.local is not None:
            self.local._dirty.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"{self.channel}-notify")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)

    async def _run(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    while True:
                        await self._pending.wait()
                        self._pending.clear()
                        await conn.execute(f"NOTIFY {self.channel}")
                        await asyncio.sleep(self.min_gap)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("stream notifier lost its connection", channel=self.channel, error=str(error))
                await asyncio.sleep(1.0)


class Wakeup:
    """A generation counter readers wait on; bumped by NOTIFY (listen_forever) and by
    writers of this replica. A reader takes the generation before it reads, then waits
    for a newer one: a wake-up that lands while it reads is not lost."""

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


async def listen_forever(conninfo: str, channel: str, wakeup: Wakeup) -> None:
    """LISTEN on `channel`, bumping `wakeup` per notification; listens again after a loss."""
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                await conn.execute(f"LISTEN {channel}")
                await wakeup.bump()  # anything committed while we were away
                async for _ in conn.notifies():
                    await wakeup.bump()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # database restart: listen again shortly
            log.warning("listener lost its connection", channel=channel,
                        error=str(error).splitlines()[0] if str(error) else repr(error))
            await asyncio.sleep(1.0)
