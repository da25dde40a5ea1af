"""The HiveMind stream hub, its coalescing notifier, and retention pruning."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from alai.server import idempotency, streams
from alai.server.background import periodic
from alai.server.hive import service
from alai.server.hive.publisher import GroupPublisher
from alai.wire.hive import Message

BATCH = 1000


def source() -> streams.Source[Message]:
    async def fetch(conn, after: streams.Position, limit: int) -> list[Message]:
        return await service.visible_messages(conn, after=after, limit=limit)

    return streams.Source(name="hive", channel=service.NOTIFY_CHANNEL, fetch=fetch,
                          position_of=service.position_of, current=service.current_position)


@contextlib.asynccontextmanager
async def hive_lifespan(app: FastAPI) -> AsyncIterator[None]:
    conninfo = app.state.settings.database_url.get_secret_value()
    hub: streams.Hub[Message] = streams.Hub(source=source(), pool=app.state.pool, conninfo=conninfo,
                                            buffer=app.state.settings.hive_subscriber_buffer, batch=BATCH, poll_seconds=1.0,
                                            min_gap=app.state.settings.hive_fanout_gap_ms / 1000)
    notifier = streams.Notifier(channel=service.NOTIFY_CHANNEL, conninfo=conninfo, local=hub)
    publisher = GroupPublisher(pool=app.state.pool, on_commit=notifier.mark)
    app.state.metrics.watch_stream(hub)
    await hub.start()
    await notifier.start()
    await publisher.start()
    app.state.hive_hub, app.state.hive_notifier, app.state.hive_publisher = hub, notifier, publisher

    async def prune() -> None:
        for _ in range(100):  # a bounded amount of work per tick
            async with app.state.pool.connection(timeout=5) as conn:
                if await service.prune(conn) == 0:
                    break
        async with app.state.pool.connection(timeout=5) as conn:
            await idempotency.prune(conn, table="hive_idempotency")

    try:
        async with periodic("hive-retention", app.state.settings.hive_prune_seconds, prune):
            yield
    finally:
        await publisher.stop()
        await notifier.stop()
        await hub.stop()
