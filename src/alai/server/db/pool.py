"""The async connection pool every module borrows from.

Connections are in autocommit mode: a service never commits (STYLE.md 4), the
caller opens `async with conn.transaction():` around the writes that belong together.
"""

from __future__ import annotations

import time
from weakref import WeakKeyDictionary

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

APPLICATION_NAME = "alai"
# A connection idle for longer than this is checked before it is handed out; one in
# steady use is not (a round trip per request would cost ~10 % of a small request).
CHECK_AFTER_IDLE_SECONDS = 2.0
_returned_at: WeakKeyDictionary[AsyncConnection, float] = WeakKeyDictionary()


async def _configure(conn: AsyncConnection) -> None:
    conn.row_factory = dict_row  # type: ignore[assignment]


async def _note_return(conn: AsyncConnection) -> None:
    _returned_at[conn] = time.monotonic()


async def _check_if_idle(conn: AsyncConnection) -> None:
    returned = _returned_at.get(conn)
    if returned is None or time.monotonic() - returned > CHECK_AFTER_IDLE_SECONDS:
        await AsyncConnectionPool.check_connection(conn)


def create_pool(conninfo: str, *, min_size: int, max_size: int, timeout: float, name: str = "alai") -> AsyncConnectionPool:
    """A pool that is not open yet: `await pool.open()` in the app's lifespan."""
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        open=False,
        name=name,
        kwargs={"autocommit": True, "application_name": APPLICATION_NAME},
        configure=_configure,
        reset=_note_return,
        # A connection broken by a database restart is noticed here, not by a request.
        check=_check_if_idle,
        reconnect_timeout=0,  # keep trying forever; readiness reports the outage
    )
