"""The replica heartbeat: each process keeps its row in ops_instances fresh."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import FastAPI

from alai._version import __version__
from alai.server.background import periodic
from alai.server.ops import service

FORGET_AFTER = timedelta(days=1)


@contextlib.asynccontextmanager
async def heartbeat(app: FastAPI) -> AsyncIterator[None]:
    state = app.state

    async def beat() -> None:
        # Never wait long for a connection: a missed beat is retried at the next tick.
        async with state.pool.connection(timeout=min(5.0, state.settings.db_connect_timeout, state.settings.instance_heartbeat_seconds)) as conn:
            await service.record_instance(
                conn, instance_id=state.instance_id, hostname=socket.gethostname(), pid=os.getpid(),
                version=__version__, modules=[m.name for m in state.modules], started_at=state.started_at,
            )
            await service.prune_instances(conn, older_than=FORGET_AFTER)

    async with periodic("ops-heartbeat", state.settings.instance_heartbeat_seconds, beat):
        yield
    # Leave the list at once rather than age out of it.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2):
            async with state.pool.connection(timeout=2) as conn:
                await service.forget_instance(conn, instance_id=state.instance_id)
