"""The replica heartbeat: each process keeps its row in ops_instances fresh."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import structlog
from fastapi import FastAPI

from alai._version import __version__
from alai.server.ops import service

log = structlog.get_logger("alai.ops")
FORGET_AFTER = timedelta(days=1)


async def _beat(app: FastAPI) -> None:
    state = app.state
    async with state.pool.connection() as conn:
        await service.record_instance(
            conn, instance_id=state.instance_id, hostname=socket.gethostname(), pid=os.getpid(),
            version=__version__, modules=[m.name for m in state.modules], started_at=state.started_at,
        )
        await service.prune_instances(conn, older_than=FORGET_AFTER)


async def _heartbeat_loop(app: FastAPI) -> None:
    interval = app.state.settings.instance_heartbeat_seconds
    while True:
        try:
            await _beat(app)
        except Exception as error:  # the database may be away; readiness says so
            log.warning("instance heartbeat failed", error=str(error))
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def heartbeat(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(_heartbeat_loop(app), name="ops-heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                async with app.state.pool.connection(timeout=2) as conn:
                    await service.forget_instance(conn, instance_id=app.state.instance_id)
