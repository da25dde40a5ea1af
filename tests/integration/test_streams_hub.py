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


async def started_hub(app, **options) -> streams.Hub:
    """A hub of its own on the app's HiveMind table (quick ticks), started."""
    hub = streams.Hub(source=hive_lifespan.source(), pool=app.state.pool,
                      conninfo=app.state.settings.database_url.get_secret_value(), poll_seconds=0.2, **options)
    await hub.start()
    return hub


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
    hub = await started_hub(app, buffer=4, batch=2)
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


async def test_a_sink_takes_live_chunks_in_order_and_a_refusal_goes_through_the_queue(app, client):
    """The direct path: chunks go straight to the sink while it accepts; one it refuses
    (its connection applying back-pressure) and those after it come out of the iterator;
    once those are consumed, the sink is used again. Nothing lost, repeated or reordered."""
    hub = await started_hub(app)
    delivered: list[tuple[str, int]] = []
    accepting = True

    def sink(chunk: streams.Chunk) -> bool:
        if not accepting:
            return False
        delivered.extend(("sink", row.id) for row in chunk.rows)
        return True

    async def consume() -> None:
        async for chunk in hub.subscribe_chunks(after=None, accepts=lambda m: m.topic == "hub.test", sink=sink):
            delivered.extend(("queue", row.id) for row in chunk.rows)

    async def until(count: int) -> None:
        async def wait() -> None:
            while len(delivered) < count:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(wait(), 10)

    consumer = asyncio.create_task(consume())
    try:
        await asyncio.sleep(0.3)  # attached and live
        ids = await create(client, 3)
        await until(3)
        accepting = False
        ids += await create(client, 3)
        await until(6)
        accepting = True
        ids += await create(client, 3)
        await until(9)
        await asyncio.sleep(0.1)
        assert [row_id for _, row_id in delivered] == ids  # in order, once each
        paths = [path for path, _ in delivered]
        assert paths[:3] == ["sink"] * 3 and paths[3:6] == ["queue"] * 3 and paths[8] == "sink"
        assert hub.direct_chunks >= 4 and hub.queued_chunks >= 1
    finally:
        consumer.cancel()
        await hub.stop()


async def test_a_refusing_sink_with_a_stalled_subscriber_still_overflows(app, client):
    hub = await started_hub(app, buffer=4, batch=2)
    try:
        stalled = hub.subscribe_chunks(after=None, accepts=lambda event: True, sink=lambda chunk: False)
        eager = hub.subscribe(after=None, accepts=lambda event: True)
        assert (await anext(stalled)).rows == []  # attached (a keep-alive tick); then it stops reading
        eager_reader = asyncio.create_task(next_rows(eager, 8))
        await asyncio.sleep(0.3)  # attached
        ids = await create(client, 8)
        assert [e.id for e in await eager_reader] == ids  # all fanned out before the stalled one reads again
        await eager.aclose()
        received: list[int] = []
        with pytest.raises(streams.Overflow):
            async for chunk in stalled:
                received.extend(row.id for row in chunk.rows)
        assert received == ids[:len(received)] and len(received) <= 5
    finally:
        await hub.stop()
