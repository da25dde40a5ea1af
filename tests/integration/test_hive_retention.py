"""Retention is applied by the replica's background job, by count and by age, without
anyone asking; a topic without retention keeps everything."""

import asyncio

import pytest

from tests.support.waiting import wait_for


@pytest.fixture
def settings(settings):
    settings.hive_prune_seconds = 0.2  # set before the app starts: the job reads it then
    return settings


async def payloads(client, topic):
    return [m["payload"] for m in (await client.get(f"/v1/hive/topics/{topic}/messages")).json()["items"]]


async def test_the_background_job_prunes_by_count_and_by_age(client):
    await client.put("/v1/hive/topics/keep.three", json={"retention_max_count": 3})
    await client.put("/v1/hive/topics/keep.briefly", json={"retention_max_age_seconds": 1})
    await client.post("/v1/hive/topics/keep.three/batch", json={"messages": [{"json": n} for n in range(10)]})
    await client.post("/v1/hive/topics/keep.briefly/batch", json={"messages": [{"json": n} for n in range(4)]})
    await client.post("/v1/hive/topics/keep.all/batch", json={"messages": [{"json": n} for n in range(5)]})

    async def counted_down():
        return await payloads(client, "keep.three") == [7, 8, 9] or None
    await wait_for(counted_down)
    assert (await client.get("/v1/hive/topics/keep.three")).json()["message_count"] == 3

    await client.post("/v1/hive/topics/keep.briefly/messages", json={"json": "fresh"})
    assert "fresh" in await payloads(client, "keep.briefly")

    async def aged_out():
        return await payloads(client, "keep.briefly") == [] or None
    await wait_for(aged_out, timeout=15)  # every message, the fresh one too, once older than a second
    await asyncio.sleep(0.5)  # a few more rounds of the job
    assert await payloads(client, "keep.all") == [0, 1, 2, 3, 4]
