"""Background work that lives as long as the app: periodic jobs with a clean stop.

Stopping is by an event, not by cancelling the task in the middle of a database
call: a cancellation that lands inside a driver or pool call can be absorbed there,
and the loop would then sleep on. Cancellation stays as the last resort.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog

log = structlog.get_logger("alai.background")


@contextlib.asynccontextmanager
async def periodic(
    name: str,
    interval: float,
    job: Callable[[], Awaitable[None]],
    *,
    stop_timeout: float = 5.0,
) -> AsyncIterator[None]:
    """Runs `job` now and then every `interval` seconds until the block exits.

    A failing run is logged and retried at the next tick; it never ends the loop.
    """
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                await job()
            except Exception as error:
                log.warning("background job failed", job=name, error=str(error))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=stop_timeout)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
