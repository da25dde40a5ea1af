"""The shared stream hub: catch-up then live with nothing missed, and a stalled
subscriber cut off (told to resume) without holding anyone else back."""

import asyncio

import pytest

from alai.server import streams
from alai.server.hive import lifespan as hive_lifespan
from alai.server.hive import service as hive_service


async def next_rows(iterator, count: int, timeout: float = 10.0) -> list:
    rows = []

    async def take():
        async for row in iterator:
            if row is not None:
                rows.append(row)
                if len(rows) == count:
                    return

    await asyncio.wait_for(take(), timeout)
    return rows


async def create(client, n: int) -> list[int]:
    ids = []
    for index in range(n):
        response = await client.post("/v1/hive/topics/hub.test/messages", json={"json": index})
        assert response.status_code == 201
        ids.extend(response.json()["ids"])
    return ids


async def test_catch_up_then_live_without_gaps(app, client):
    hub: streams.Hub = app.state.hive_hub
    async with app.state.pool.connection() as conn:
        before = await hive_service.current_position(conn)
    first = await create(client, 5)  # already committed: must come from the catch-up
    subscription = hub.subscribe(after=before, accepts=lambda event: True)
    reader = asyncio.create_task(next_rows(subscription, 10))
    await asyncio.sleep(0.05)
    second = await create(client, 5)  # arrive live
    events = await reader
    await subscription.aclose()
    assert [e.id for e in events] == first + second
    positions = [hive_service.position_of(e) for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 10


async def test_a_stalled_subscriber_overflows_and_the_others_keep_going(app, client):
    hub = streams.Hub(source=hive_lifespan.source(), pool=app.state.pool,
                      conninfo=app.state.settings.database_url.get_secret_value(), buffer=4, batch=2,
                      poll_seconds=0.2)
    await hub.start()
    try:
        stalled = hub.subscribe(after=None, accepts=lambda event: True)
        eager = hub.subscribe(after=None, accepts=lambda event: True)
        assert await anext(stalled) is None  # attached; nothing written yet (a keep-alive tick)
        eager_reader = asyncio.create_task(next_rows(eager, 8))
        await asyncio.sleep(0.3)
        ids = await create(client, 8)
        events = await eager_reader
        assert [e.id for e in events] == ids  # not held back by the stalled one
        received = []
        with pytest.raises(streams.Overflow):
            async for row in stalled:
                if row is not None:
                    received.append(row.id)
        assert received == ids[:len(received)] and len(received) <= 5  # what fit, then told to resume
        await eager.aclose()
    finally:
        await hub.stop()
