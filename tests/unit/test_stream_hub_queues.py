"""A hub's subscriber queues: keep-alive ticks, overflow and the hub's end (no database)."""

from __future__ import annotations

import asyncio

import pytest

from alai.server import streams


def make_hub(buffer: int = 3) -> streams.Hub:
    source = streams.Source(name="test", channel="test", fetch=None, position_of=lambda row: row,  # type: ignore[arg-type]
                            current=None)  # type: ignore[arg-type]
    hub = streams.Hub(source=source, pool=None, conninfo="", buffer=buffer)  # type: ignore[arg-type]
    hub.position = (1, 0)
    return hub


async def attached(hub: streams.Hub):
    chunks = hub.subscribe_chunks(after=None, accepts=lambda row: True)
    first = asyncio.ensure_future(anext(chunks))
    await asyncio.sleep(0)  # attached, waiting on its queue
    return chunks, first


async def test_an_overflowed_subscriber_gets_what_was_queued_before_it_is_cut_off():
    hub = make_hub(buffer=3)
    chunks, first = await attached(hub)
    hub._fan_out([(2, 1)])
    assert (await first).rows == [(2, 1)]
    # While the subscriber is busy elsewhere: the ticker's keep-alive, then rows, then
    # more than its buffer holds.
    (subscription,) = hub._subscriptions
    subscription.queue.put_nowait(streams.TICK)
    hub._fan_out([(3, 1), (3, 2)])
    hub._fan_out([(4, 1), (4, 2)])
    received = []
    with pytest.raises(streams.Overflow):
        async for chunk in chunks:
            received.extend(chunk.rows)
    assert received == [(3, 1), (3, 2)]


async def test_a_tick_is_an_empty_chunk():
    hub = make_hub()
    chunks, first = await attached(hub)
    (subscription,) = hub._subscriptions
    subscription.queue.put_nowait(streams.TICK)
    assert (await first).rows == []
    await chunks.aclose()
    assert not hub._subscriptions


async def test_subscriptions_end_when_the_hub_stops():
    hub = make_hub()
    chunks, first = await attached(hub)
    await hub.stop()
    with pytest.raises(StopAsyncIteration):
        await first
    assert [chunk async for chunk in hub.subscribe_chunks(after=None, accepts=lambda row: True)] == []
