"""The async connection pool every module borrows from.

Connections are in autocommit mode: a service never commits (STYLE.md 4), the
caller opens `async with conn.transaction():` around the writes that belong together.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

APPLICATION_NAME = "alai"


async def _configure(conn: AsyncConnection) -> None:
    conn.row_factory = dict_row  # type: ignore[assignment]


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
        # A connection broken by a database restart is noticed here, not by a request.
        check=AsyncConnectionPool.check_connection,
        reconnect_timeout=0,  # keep trying forever; readiness reports the outage
    )
