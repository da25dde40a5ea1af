"""HiveMind's API: publish (one, batch, idempotent), history, topics, memory, bad input."""

import asyncio

import pytest

from tests.support.waiting import wait_for


async def publish(client, topic, **message):
    response = await client.post(f"/v1/hive/topics/{topic}/messages", json=message)
    assert response.status_code == 201, response.text
    return response.json()


async def test_publish_history_and_topics(client):
    first = await publish(client, "agents.status", json={"agent": "coder", "state": "busy"}, key="coder",
                          headers={"trace": "t1"})
    await publish(client, "agents.status", text="plain words")
    batch = await client.post("/v1/hive/topics/agents.status/batch",
                              json={"messages": [{"json": n} for n in range(5)]})
    assert batch.status_code == 201 and len(batch.json()["ids"]) == 5
    assert batch.json()["ids"] == sorted(batch.json()["ids"]) and batch.json()["ids"][0] > first["ids"][0]

    history = (await client.get("/v1/hive/topics/agents.status/messages", params={"limit": 3})).json()
    assert [m["payload"] for m in history["items"]] == [{"agent": "coder", "state": "busy"}, "plain words", 0]
    assert history["items"][0]["sender"] == "admin-token" and history["items"][0]["headers"] == {"trace": "t1"}
    assert history["items"][1]["content_type"] == "text"
    rest = (await client.get("/v1/hive/topics/agents.status/messages",
                             params={"after_id": history["next_after_id"]})).json()
    assert [m["payload"] for m in rest["items"]] == [1, 2, 3, 4]
    newest = (await client.get("/v1/hive/topics/agents.status/messages", params={"order": "desc", "limit": 1})).json()
    assert newest["items"][0]["payload"] == 4

    topics = {t["name"]: t for t in (await client.get("/v1/hive/topics")).json()}
    assert topics["agents.status"]["message_count"] == 7 and topics["agents.status"]["last_message_at"]


async def test_payloads_keys_and_headers_come_back_as_sent(client):
    """Every character an array literal would have to quote or escape survives the store
    (the publish sends its arrays in binary)."""
    awkward = 'NULL, "quoted" {braced} back\\slash\ttab\nnewline ünï ☃ 𝄞'
    messages = [{"text": awkward, "key": awkward, "headers": {awkward: awkward}},
                {"json": {"nested": [awkward, None, 1.5, {"": "NULL"}]}, "key": "NULL"},
                {"text": ""}, {"json": None}, {"text": "NULL"}]
    batch = await client.post("/v1/hive/topics/odd.chars/batch", json={"messages": messages})
    assert batch.status_code == 201, batch.text
    items = (await client.get("/v1/hive/topics/odd.chars/messages")).json()["items"]
    assert [(m["payload"], m["key"], m["headers"]) for m in items] == [
        (awkward, awkward, {awkward: awkward}), ({"nested": [awkward, None, 1.5, {"": "NULL"}]}, "NULL", {}),
        ("", None, {}), (None, None, {}), ("NULL", None, {})]
    assert [m["content_type"] for m in items] == ["text", "json", "text", "json", "text"]


async def test_idempotent_publish_is_stored_once(client):
    headers = {"Idempotency-Key": "pub-1"}
    results = await asyncio.gather(*[client.post("/v1/hive/topics/once.only/messages", json={"json": 1},
                                                 headers=headers) for _ in range(4)])
    assert {r.status_code for r in results} == {201} and len({tuple(r.json()["ids"]) for r in results}) == 1
    assert (await client.get("/v1/hive/topics/once.only")).json()["message_count"] == 1
    other = await client.post("/v1/hive/topics/once.only/messages", json={"json": 2}, headers=headers)
    assert other.status_code == 422


async def test_retention_prunes_in_the_background_job(app, client):
    from alai.server.hive import service

    await client.put("/v1/hive/topics/short.lived", json={"retention_max_count": 3, "description": "keeps 3"})
    await client.post("/v1/hive/topics/short.lived/batch", json={"messages": [{"json": n} for n in range(10)]})
    async with app.state.pool.connection() as conn:
        assert await service.prune(conn) == 7
    kept = (await client.get("/v1/hive/topics/short.lived/messages")).json()["items"]
    assert [m["payload"] for m in kept] == [7, 8, 9]
    assert (await client.get("/v1/hive/topics/short.lived")).json()["message_count"] == 3


async def test_memory_with_versions_and_change_events(client):
    created = await client.put("/v1/hive/memory/coder/last-task", json={"value": {"id": "MC-1"}})
    assert created.status_code == 201 and created.headers["etag"] == '"1"'
    stale = await client.put("/v1/hive/memory/coder/last-task", json={"value": 2}, headers={"If-Match": '"0"'})
    assert stale.status_code == 412
    updated = await client.put("/v1/hive/memory/coder/last-task", json={"value": 2}, headers={"If-Match": '"1"'})
    assert updated.status_code == 200 and updated.json()["version"] == 2
    exists = await client.put("/v1/hive/memory/coder/last-task", json={"value": 3}, headers={"If-None-Match": "*"})
    assert exists.status_code == 412
    await client.put("/v1/hive/memory/coder/other", json={"value": True})
    listed = (await client.get("/v1/hive/memory/coder", params={"prefix": "last"})).json()
    assert [e["key"] for e in listed] == ["last-task"]
    assert (await client.delete("/v1/hive/memory/coder/other")).status_code == 204
    assert (await client.get("/v1/hive/memory/coder/other")).status_code == 404
    nested = await client.put("/v1/hive/memory/coder/memory/7", json={"value": "slashes in keys"})
    assert nested.status_code == 201
    assert (await client.get("/v1/hive/memory/coder/memory/7")).json()["value"] == "slashes in keys"
    assert (await client.delete("/v1/hive/memory/coder/memory/7")).status_code == 204
    for n in range(5):
        await client.put(f"/v1/hive/memory/pages/k{n}", json={"value": n})
    first = (await client.get("/v1/hive/memory/pages", params={"limit": 2})).json()
    rest = (await client.get("/v1/hive/memory/pages", params={"limit": 10, "after": first[-1]["key"]})).json()
    assert [e["key"] for e in first] == ["k0", "k1"] and [e["key"] for e in rest] == ["k2", "k3", "k4"]
    events = (await client.get("/v1/hive/topics/hive.memory.coder/messages")).json()["items"]
    assert [(e["payload"]["change"], e["payload"]["key"]) for e in events] == [
        ("set", "last-task"), ("set", "last-task"), ("set", "other"), ("deleted", "other"),
        ("set", "memory/7"), ("deleted", "memory/7")]


async def test_memory_writes_that_race_are_decided_one_after_the_other(client):
    """If-None-Match: * creates once however many race; If-Match decides against the
    version the write locked; a value JSON cannot hold is a 422, never a 500."""
    created = await asyncio.gather(*[client.put("/v1/hive/memory/race/key", json={"value": n},
                                                headers={"If-None-Match": "*"}) for n in range(8)])
    assert sorted(r.status_code for r in created) == [201] + [412] * 7
    assert (await client.get("/v1/hive/memory/race/key")).json()["version"] == 1
    updates = await asyncio.gather(*[client.put("/v1/hive/memory/race/key", json={"value": n},
                                                headers={"If-Match": '"1"'}) for n in range(4)])
    assert sorted(r.status_code for r in updates) == [200, 412, 412, 412]
    deletes = await asyncio.gather(*[client.delete("/v1/hive/memory/race/key", headers={"If-Match": '"2"'}),
                                     client.put("/v1/hive/memory/race/key", json={"value": "new"},
                                                headers={"If-Match": '"2"'})])
    assert sorted(r.status_code for r in deletes) in ([200, 412], [204, 412])  # one of them, never both
    events = (await client.get("/v1/hive/topics/hive.memory.race/messages")).json()["items"]
    assert [e["payload"]["version"] for e in events][:2] == [1, 2] and len(events) == 3
    nan = await client.put("/v1/hive/memory/race/nan", content=b'{"value": NaN}',
                           headers={"Content-Type": "application/json"})
    assert nan.status_code == 422 and nan.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/v1/hive/memory/race/nan")).status_code == 404


async def test_a_topics_messages_are_delivered_in_commit_order(app, client, database_url):
    """A publish on x waits (another session holds x's row, as a topic's update would);
    then a group commit on a and x writes a — taking its transaction id — and queues
    behind it for x. The publish commits first; the group's older transaction id must
    not put its message on x ahead of it. Every writer takes its topics' advisory locks
    before its first write, so the group gets its id only after the publish commits."""
    import psycopg

    from alai.server.hive import service
    from alai.wire.hive import MessageIn

    await publish(client, "a.first", text="exists")
    probe = await publish(client, "x.second", text="exists")
    async with app.state.pool.connection() as conn:
        start = await service.position_of_id(conn, message_id=probe["ids"][0])
    holder = psycopg.connect(database_url)
    committed: list[str] = []

    def waiting_publishes():
        with psycopg.connect(database_url, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND wait_event_type IN ('Lock', 'advisory') AND query LIKE '%%hive_publish%%'"
                                ).fetchone()[0]

    try:
        holder.execute("SELECT 1 FROM hive_topics WHERE name = 'x.second' FOR UPDATE")

        async def plain():
            await publish(client, "x.second", text="plain on x")
            committed.append("plain on x")

        async def group():
            async with app.state.pool.connection() as conn, conn.transaction():
                await service.publish_groups(conn, [
                    service.Group("a.first", "test", [service.prepare(MessageIn(text="group on a"))]),
                    service.Group("x.second", "test", [service.prepare(MessageIn(text="group on x"))])])
            committed.append("group on x")

        plained = asyncio.create_task(plain())
        await wait_for(lambda: asyncio.to_thread(waiting_publishes))  # the publish waits for x
        grouped = asyncio.create_task(group())

        async def both_wait():
            return await asyncio.to_thread(waiting_publishes) == 2
        await wait_for(both_wait)
        holder.rollback()
        await asyncio.gather(plained, grouped)
    finally:
        holder.close()
    assert committed == ["plain on x", "group on x"]
    async with app.state.pool.connection() as conn:
        delivered = await service.visible_messages(conn, after=start, limit=10)
    assert [m.payload for m in delivered if m.topic == "x.second"] == committed


@pytest.mark.parametrize(("method", "url", "body", "status"), [
    ("post", "/v1/hive/topics/bad topic/messages", {"json": 1}, 422),
    ("post", "/v1/hive/topics/a..b/messages", {"json": 1}, 422),
    ("post", "/v1/hive/topics/ok/messages", {"json": 1, "text": "both"}, 422),
    ("post", "/v1/hive/topics/ok/messages", {}, 422),
    ("post", "/v1/hive/topics/ok/messages", {"text": "x" * (256 * 1024 + 1)}, 413),
    ("post", "/v1/hive/topics/ok/batch", {"messages": []}, 422),
    ("put", "/v1/hive/topics/ok", {"retention_max_count": 0}, 422),
    ("get", "/v1/hive/subscribe?topic=agents.>.x", None, 422),
    ("get", "/v1/hive/subscribe?topic=agents.*&from=999999999", None, 400),
    ("get", "/v1/hive/subscribe?topic=agents.*&from=x-y", None, 400),
    ("get", "/v1/hive/subscribe?topic=agents.*&from=9000000000000000000-1", None, 400),  # no such transaction yet
    ("get", "/v1/hive/subscribe?topic=agents.*&from=1-99999999", None, 400),  # no such message yet
    ("get", "/v1/hive/topics/nope.none", None, 404),
    ("post", "/v1/hive/topics/hive.memory.coder/messages", {"json": {"change": "set"}}, 403),
    ("post", "/v1/hive/topics/ok/batch", {"messages": [{"text": "y" * (200 * 1024)}] * 90}, 413),  # 18 MiB body
])
async def test_bad_input_is_4xx(client, method, url, body, status):
    response = await client.request(method.upper(), url, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_patterns():
    from alai.server.hive import service

    star = service.compile_pattern("agents.*")
    assert star.match("agents.status") and not star.match("agents.status.x") and not star.match("agents")
    rest = service.compile_pattern("tenders.>")
    assert rest.match("tenders.new") and rest.match("tenders.new.eu") and not rest.match("tenders")
    assert service.compile_pattern("a.b").match("a.b") and not service.compile_pattern("a.b").match("a.bc")
