"""The runner's API in process: agents, runs, the worker protocol (claim, heartbeat,
guarded writes), leases, cancel, outcomes on Mission Control and HiveMind, bad input."""

import asyncio
from datetime import datetime

import pytest

from tests.support.waiting import wait_for

CODER = """---
name: coder
description: Writes code
model: qwen2.5-coder:32b
tools: Read, Grep
timeout: 10m
---
You write code.
"""
TASKER = """---
name: tasker
model: alaiml-task
max_attempts: 2
---
You sort tasks.
"""
NODE = {"X-Alai-Node": "anvil"}


@pytest.fixture
def settings(settings):
    """Short leases and a quick sweeper, set before the app starts (its sweeper reads them then)."""
    settings.runs_lease_seconds = 3
    settings.nodes_offline_seconds = 10  # longer than a lease: a lapsed lease requeues (not waits)
    settings.runs_sweep_seconds = 0.2
    return settings


async def put_agent(client, name, text):
    response = await client.put(f"/v1/agents/{name}", json={"definition": text})
    assert response.status_code in (200, 201), response.text
    return response.json()


async def register(client, name, *models, capabilities=()):
    caps = [f"model:{m}" for m in models] + list(capabilities)
    response = await client.put(f"/v1/nodes/{name}", json={"capabilities": caps})
    assert response.status_code == 200, response.text
    return response.json()


async def claim(client, node="anvil", capacity=1, wait=0.0):
    response = await client.post(f"/v1/nodes/{node}/claim", json={"capacity": capacity, "wait": wait})
    assert response.status_code == 200, response.text
    return response.json()


async def events_of(client, run_id):
    """A finished run's events. Events become readable once every older transaction in
    the database has ended (the stream's horizon): under load that is a moment later."""
    async def complete():
        items = (await client.get(f"/v1/runs/{run_id}/events")).json()["items"]
        final = items and items[-1]["kind"] == "state" and items[-1]["data"]["state"] in (
            "succeeded", "failed", "cancelled", "timed_out")
        return items if final else None
    return await wait_for(complete)


async def test_agents_are_versioned_and_parsed(client):
    first = await put_agent(client, "coder", CODER)
    assert first["version"] == 1 and first["tools"] == ["Read", "Grep"] and first["timeout_seconds"] == 600
    assert first["model"] == "qwen2.5-coder:32b" and first["system_prompt"] == "You write code."
    same = await put_agent(client, "coder", CODER)
    assert same["version"] == 1  # the same text is no new version
    second = await put_agent(client, "coder", CODER.replace("You write code.", "You write tests."))
    assert second["version"] == 2
    old = (await client.get("/v1/agents/coder", params={"version": 1})).json()
    assert old["system_prompt"] == "You write code."
    assert [a["name"] for a in (await client.get("/v1/agents")).json()] == ["coder"]
    bad = await client.put("/v1/agents/coder", json={"definition": "---\nname: other\n---\nx"})
    assert bad.status_code == 422 and "other" in bad.json()["detail"]
    bad_yaml = await client.put("/v1/agents/x", json={"definition": "---\nmodel: [unclosed\n---\nx"})
    assert bad_yaml.status_code == 422
    assert (await client.put("/v1/agents/no spaces", json={"definition": "x"})).status_code == 422
    assert (await client.delete("/v1/agents/coder")).status_code == 204
    assert (await client.get("/v1/agents/coder")).status_code == 404


async def test_a_run_waits_for_a_capable_node_then_runs_to_success(client):
    await put_agent(client, "tasker", TASKER)
    created = await client.post("/v1/runs", json={"agent": "tasker", "input": "sort these"})
    assert created.status_code == 201, created.text
    run = created.json()
    assert run["state"] == "waiting" and "model:alaiml-task:latest" in run["reason"]
    assert run["requires"] == ["model:alaiml-task:latest"] and run["max_attempts"] == 2

    await register(client, "forge", "devstral:24b")
    assert await claim(client, "forge") == []  # forge cannot take it
    await register(client, "anvil", "alaiml-task:latest", "bge-m3:latest")

    async def queued():
        return (await client.get(f"/v1/runs/{run['id']}")).json()["state"] == "queued"
    await wait_for(queued)  # the sweeper saw anvil come online

    claims = await claim(client)
    assert len(claims) == 1 and claims[0]["input"] == "sort these"
    assert claims[0]["agent"]["system_prompt"] == "You sort tasks." and claims[0]["run"]["attempt"] == 1
    posted = await client.post(f"/v1/runs/{run['id']}/attempts/1/events", headers=NODE, json={"events": [
        {"seq": 0, "kind": "output", "data": {"text": "a, "}}, {"seq": 1, "kind": "output", "data": {"text": "b"}}]})
    assert posted.status_code == 204, posted.text
    again = await client.post(f"/v1/runs/{run['id']}/attempts/1/events", headers=NODE, json={"events": [
        {"seq": 1, "kind": "output", "data": {"text": "b"}}]})  # a retried post: stored once
    assert again.status_code == 204
    assert (await client.get(f"/v1/runs/{run['id']}/result")).status_code == 409
    done = await client.post(f"/v1/runs/{run['id']}/attempts/1/complete", headers=NODE,
                             json={"outcome": "succeeded", "output": "a, b", "usage": {"completion_tokens": 2}})
    assert done.status_code == 200 and done.json()["state"] == "succeeded"
    result = (await client.get(f"/v1/runs/{run['id']}/result")).json()
    assert result["output"] == "a, b" and result["usage"] == {"completion_tokens": 2}

    events = await events_of(client, run["id"])
    states = [e["data"]["state"] for e in events if e["kind"] == "state"]
    assert states == ["waiting", "queued", "running", "succeeded"]
    assert [e["data"]["text"] for e in events if e["kind"] == "output"] == ["a, ", "b"]

    nodes = {n["name"]: n for n in (await client.get("/v1/nodes")).json()}
    assert nodes["anvil"]["online"] and nodes["anvil"]["models"] == ["alaiml-task:latest", "bge-m3:latest"]
    # The HiveMind topic runs.tasker saw every change (published just after each commit).
    async def published():
        history = (await client.get("/v1/hive/topics/runs.tasker/messages")).json()["items"]
        return history if len(history) >= 4 else None
    history = await wait_for(published)
    assert [m["payload"]["state"] for m in history] == ["waiting", "queued", "running", "succeeded"]
    last = history[-1]
    assert (last["key"], last["content_type"], last["headers"]) == (str(run["id"]), "json", {})
    assert last["payload"] | {"at": None} == {"run_id": run["id"], "agent": "tasker", "state": "succeeded",
                                              "attempt": 1, "node": "anvil", "reason": None, "task_id": None,
                                              "at": None}
    assert datetime.fromisoformat(last["payload"]["at"]).tzinfo is not None


async def test_an_expired_lease_requeues_and_the_old_attempt_is_refused(client):
    await put_agent(client, "tasker", TASKER)
    await register(client, "anvil", "alaiml-task")
    await register(client, "forge", "alaiml-task")
    run = (await client.post("/v1/runs", json={"agent": "tasker", "input": "x"})).json()
    first = await claim(client, "anvil")
    assert first[0]["run"]["id"] == run["id"]

    async def requeued():
        return (await client.get(f"/v1/runs/{run['id']}")).json()["state"] == "queued"
    await wait_for(requeued)  # anvil never renewed its lease
    second = await claim(client, "forge")
    assert second[0]["run"]["attempt"] == 2

    late = await client.post(f"/v1/runs/{run['id']}/attempts/1/complete", headers=NODE,
                             json={"outcome": "succeeded", "output": "zombie"})
    assert late.status_code == 409 and late.json()["current_attempt"] == 2
    late_events = await client.post(f"/v1/runs/{run['id']}/attempts/1/events", headers=NODE,
                                    json={"events": [{"seq": 0, "kind": "output", "data": {"text": "zombie"}}]})
    assert late_events.status_code == 409
    beat = (await client.post("/v1/nodes/anvil/heartbeat",
                              json={"running": [{"run_id": run["id"], "attempt": 1}]})).json()
    assert beat["lost"] == [{"run_id": run["id"], "attempt": 1}]
    ok = await client.post(f"/v1/runs/{run['id']}/attempts/2/complete", headers={"X-Alai-Node": "forge"},
                           json={"outcome": "succeeded", "output": "real"})
    assert ok.status_code == 200
    assert (await client.get(f"/v1/runs/{run['id']}/result")).json()["output"] == "real"


async def test_heartbeats_keep_a_lease_and_the_last_attempt_fails(client):
    await put_agent(client, "tasker", TASKER)
    await register(client, "anvil", "alaiml-task")
    run = (await client.post("/v1/runs", json={"agent": "tasker", "input": "x", "max_attempts": 1})).json()
    await claim(client)
    for _ in range(8):  # 4 s of heartbeats: longer than the 3 s lease
        beat = await client.post("/v1/nodes/anvil/heartbeat", json={"running": [{"run_id": run["id"], "attempt": 1}]})
        assert beat.json()["lost"] == [] and beat.json()["cancel"] == []
        await asyncio.sleep(0.5)
    assert (await client.get(f"/v1/runs/{run['id']}")).json()["state"] == "running"

    async def failed():
        body = (await client.get(f"/v1/runs/{run['id']}")).json()
        return body if body["state"] == "failed" else None
    body = await wait_for(failed)
    assert "no attempts left" in body["reason"]
    # The node's completion comes after all: not a repeat of the sweeper's end, a stale write.
    late = await client.post(f"/v1/runs/{run['id']}/attempts/1/complete", headers=NODE,
                             json={"outcome": "succeeded", "output": "too late"})
    assert late.status_code == 409 and late.json()["state"] == "failed"
    assert (await client.get(f"/v1/runs/{run['id']}/result")).json()["output"] is None


async def test_a_failed_attempt_is_retried_while_attempts_remain(client):
    await put_agent(client, "tasker", TASKER)
    await register(client, "anvil", "alaiml-task")
    run = (await client.post("/v1/runs", json={"agent": "tasker", "input": "x"})).json()
    await claim(client)
    retried = await client.post(f"/v1/runs/{run['id']}/attempts/1/complete", headers=NODE,
                                json={"outcome": "failed", "error": "model crashed"})
    assert retried.json()["state"] == "queued" and "model crashed" in retried.json()["reason"]
    await claim(client)
    final = await client.post(f"/v1/runs/{run['id']}/attempts/2/complete", headers=NODE,
                              json={"outcome": "failed", "error": "crashed again"})
    assert final.json()["state"] == "failed"


async def test_a_run_given_back_is_queued_again_and_its_attempt_not_counted(client):
    """A stopping node releases its run: queued at once for another node, and the
    released attempt does not count (max_attempts 2: two real ones still follow)."""
    await put_agent(client, "tasker", TASKER)
    await register(client, "anvil", "alaiml-task")
    await register(client, "forge", "alaiml-task")
    run = (await client.post("/v1/runs", json={"agent": "tasker", "input": "x", "max_attempts": 2,
                                               "priority": 50})).json()
    assert (await claim(client, "anvil"))[0]["run"]["id"] == run["id"]
    given = await client.post(f"/v1/runs/{run['id']}/attempts/1/release", headers=NODE)
    assert given.status_code == 200 and given.json()["state"] == "queued" and "anvil" in given.json()["reason"]
    again = await client.post(f"/v1/runs/{run['id']}/attempts/1/release", headers=NODE)
    assert again.status_code == 409
    second = await claim(client, "forge")
    assert second[0]["run"]["id"] == run["id"] and second[0]["run"]["attempt"] == 2
    forge = {"X-Alai-Node": "forge"}
    failed = await client.post(f"/v1/runs/{run['id']}/attempts/2/complete", headers=forge,
                               json={"outcome": "failed", "error": "real failure"})
    assert failed.json()["state"] == "queued"  # the first counted attempt: one left
    assert (await claim(client, "forge"))[0]["run"]["attempt"] == 3
    last = await client.post(f"/v1/runs/{run['id']}/attempts/3/complete", headers=forge,
                             json={"outcome": "failed", "error": "again"})
    assert last.json()["state"] == "failed"
    states = [e["data"]["state"] for e in await events_of(client, run["id"]) if e["kind"] == "state"]
    assert states == ["queued", "running", "queued", "running", "queued", "running", "failed"]


async def test_cancel_queued_and_running(client):
    await put_agent(client, "tasker", TASKER)
    await register(client, "anvil", "alaiml-task")
    queued = (await client.post("/v1/runs", json={"agent": "tasker", "input": "a", "priority": -1})).json()
    running = (await client.post("/v1/runs", json={"agent": "tasker", "input": "b", "priority": 5})).json()
    claimed = await claim(client)
    assert claimed[0]["run"]["id"] == running["id"]  # higher priority first
    cancelled = await client.post(f"/v1/runs/{queued['id']}/cancel")
    assert cancelled.json()["state"] == "cancelled"
    assert (await client.post(f"/v1/runs/{queued['id']}/cancel")).status_code == 409
    asked = (await client.post(f"/v1/runs/{running['id']}/cancel")).json()
    assert asked["state"] == "running" and asked["cancel_requested"]
    beat = (await client.post("/v1/nodes/anvil/heartbeat",
                              json={"running": [{"run_id": running["id"], "attempt": 1}]})).json()
    assert beat["cancel"] == [{"run_id": running["id"], "attempt": 1}]
    end = await client.post(f"/v1/runs/{running['id']}/attempts/1/complete", headers=NODE,
                            json={"outcome": "cancelled"})
    assert end.json()["state"] == "cancelled"


async def test_a_run_linked_to_a_task_comments_and_moves_it(client):
    await put_agent(client, "tasker", TASKER)
    await register(client, "anvil", "alaiml-task")
    task = (await client.post("/v1/mc/tasks", json={"title": "Sort the inbox"})).json()
    run = (await client.post("/v1/runs", json={"agent": "tasker", "input": "go", "task_id": task["id"]})).json()
    await claim(client)

    async def in_progress():
        return (await client.get(f"/v1/mc/tasks/{task['id']}")).json()["status"] == "in_progress"
    await wait_for(in_progress)
    await client.post(f"/v1/runs/{run['id']}/attempts/1/complete", headers=NODE,
                      json={"outcome": "succeeded", "output": "inbox sorted"})
    after = (await client.get(f"/v1/mc/tasks/{task['id']}")).json()
    assert after["status"] == "done"
    comments = (await client.get(f"/v1/mc/tasks/{task['id']}/comments")).json()
    assert any("inbox sorted" in c["body"] and f"Run {run['id']}" in c["body"] for c in comments)
    # A retried completion (its answer was lost) answers as the first did and comments no more.
    again = await client.post(f"/v1/runs/{run['id']}/attempts/1/complete", headers=NODE,
                              json={"outcome": "succeeded", "output": "inbox sorted"})
    assert again.status_code == 200 and again.json()["state"] == "succeeded"
    assert (await client.get(f"/v1/mc/tasks/{task['id']}/comments")).json() == comments


async def test_the_stream_follows_a_run_to_its_end_and_resumes(client):
    await put_agent(client, "tasker", TASKER)
    await register(client, "anvil", "alaiml-task")
    run = (await client.post("/v1/runs", json={"agent": "tasker", "input": "x"})).json()

    async def worker():
        await claim(client, wait=5)
        for seq in range(3):
            await client.post(f"/v1/runs/{run['id']}/attempts/1/events", headers=NODE,
                              json={"events": [{"seq": seq, "kind": "output", "data": {"text": str(seq)}}]})
            await asyncio.sleep(0.05)
        await client.post(f"/v1/runs/{run['id']}/attempts/1/complete", headers=NODE,
                          json={"outcome": "succeeded", "output": "012"})

    async def read_stream(headers=None):
        seen = []
        async with client.stream("GET", f"/v1/runs/{run['id']}/stream", headers=headers or {}) as response:
            assert response.status_code == 200
            event_id = None
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("event: "):
                    seen.append((event_id, line[7:]))
        return seen

    streamed, _ = await asyncio.gather(read_stream(), worker())
    kinds = [kind for _, kind in streamed]
    assert kinds == ["state", "state", "output", "output", "output", "state"]  # queued, running, …, succeeded
    resumed = await read_stream({"Last-Event-ID": streamed[2][0]})
    assert [kind for _, kind in resumed] == ["output", "output", "state"]
    assert await read_stream({"Last-Event-ID": streamed[-1][0]}) == []  # nothing after the end


async def test_idempotent_create_and_bad_input(client):
    await put_agent(client, "coder", CODER)
    headers = {"Idempotency-Key": "run-1"}
    made = await asyncio.gather(*[client.post("/v1/runs", json={"agent": "coder", "input": "x"}, headers=headers)
                                  for _ in range(3)])
    assert {r.status_code for r in made} == {201} and len({r.json()["id"] for r in made}) == 1
    cases = [
        ({"agent": "nobody"}, 422),
        ({"agent": "coder", "timeout_seconds": 0}, 422),
        ({"agent": "coder", "timeout_seconds": 10**9}, 422),
        ({"agent": "coder", "max_attempts": 0}, 422),
        ({"agent": "coder", "input": "x" * (1024 * 1024 + 1)}, 413),
        ({"agent": "coder", "task_id": "MC-999999"}, 422),
        ({"agent": "coder", "surprise": 1}, 422),
    ]
    for body, status in cases:
        response = await client.post("/v1/runs", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    # The body is read by the route itself (a direct route): its errors name fields as FastAPI's do.
    surprise = (await client.post("/v1/runs", json={"agent": "coder", "surprise": 1})).json()
    assert [e["field"] for e in surprise["errors"]] == ["body.surprise"]
    for raw in (b"{not json", b"", b"[]"):
        broken = await client.post("/v1/runs", content=raw, headers={"Content-Type": "application/json"})
        assert broken.status_code == 422 and broken.json()["errors"], raw
    assert (await client.get("/v1/runs/999999")).status_code == 404
    assert (await client.get("/v1/runs", params={"state": "sleeping"})).status_code == 422
    assert (await client.post("/v1/runs/1/attempts/1/events", json={"events": []})).status_code == 422
    assert (await client.put("/v1/nodes/bad name", json={})).status_code == 422
    assert (await client.put("/v1/nodes/n1", json={"capabilities": ["no-kind"]})).status_code == 422
    page = (await client.get("/v1/runs", params={"agent": "coder", "limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"] is None


async def test_many_agents_completing_at_once_publish_every_state_without_deadlock(client):
    names = [f"agent-{n}" for n in range(6)]
    for name in names:
        await put_agent(client, name, TASKER.replace("name: tasker", f"name: {name}"))
    await register(client, "anvil", "alaiml-task")
    runs = [(await client.post("/v1/runs", json={"agent": name, "input": str(i)})).json()
            for i in range(5) for name in names]
    claimed = await claim(client, capacity=len(runs), wait=2)
    assert len(claimed) == len(runs)
    done = await asyncio.gather(*[client.post(f"/v1/runs/{c['run']['id']}/attempts/1/complete", headers=NODE,
                                              json={"outcome": "succeeded", "output": "ok"}) for c in claimed])
    assert {r.status_code for r in done} == {200}

    async def all_published():
        counts = {t["name"]: t["message_count"] for t in (await client.get("/v1/hive/topics")).json()}
        return all(counts.get(f"runs.{name}", 0) >= 15 for name in names)  # queued, running, succeeded × 5
    await wait_for(all_published)
    for run in runs:
        events = await events_of(client, run["id"])
        assert not [e for e in events if e["kind"] == "outcome"], events  # nothing failed to apply


async def test_completions_in_one_call_are_answered_each_as_alone(client):
    """POST /v1/runs/completions: every item answered as .../complete would answer it, in
    the request's order; a refused item (superseded, unknown) changes nothing and leaves
    the others alone; a repeated call answers as the first did."""
    await put_agent(client, "tasker", TASKER)
    await register(client, "anvil", "alaiml-task:latest")
    runs = [(await client.post("/v1/runs", json={"agent": "tasker", "input": f"job {n}"})).json() for n in range(4)]
    claims = await claim(client, capacity=4)
    assert sorted(c["run"]["id"] for c in claims) == sorted(r["id"] for r in runs)
    first, second, third, fourth = (r["id"] for r in runs)
    items = [
        {"run_id": third, "attempt": 1, "outcome": "succeeded", "output": "three"},
        {"run_id": first, "attempt": 2, "outcome": "succeeded"},  # not its attempt: 409
        {"run_id": 999_999, "attempt": 1, "outcome": "succeeded"},  # no such run: 404
        {"run_id": first, "attempt": 1, "outcome": "succeeded", "output": "one", "usage": {"tokens": 1}},
        {"run_id": second, "attempt": 1, "outcome": "failed", "error": "boom"},  # retried: queued again
    ]
    answer = await client.post("/v1/runs/completions", headers=NODE, json={"items": items})
    assert answer.status_code == 200, answer.text
    results = answer.json()["items"]
    assert [(r["run_id"], r["attempt"], r["status"]) for r in results] == [
        (third, 1, 200), (first, 2, 409), (999_999, 1, 404), (first, 1, 200), (second, 1, 200)]
    assert results[1]["problem"]["type"].endswith("attempt-superseded")
    assert results[1]["problem"]["status"] == 409 and results[1]["problem"]["current_attempt"] == 1
    assert results[2]["problem"]["status"] == 404 and results[0]["run"]["state"] == "succeeded"
    assert results[4]["run"]["state"] == "queued" and "boom" in results[4]["run"]["reason"]
    assert (await client.get(f"/v1/runs/{first}/result")).json()["output"] == "one"
    assert (await client.get(f"/v1/runs/{fourth}")).json()["state"] == "running"  # not in the call
    again = await client.post("/v1/runs/completions", headers=NODE, json={"items": items[:1]})
    assert again.json()["items"][0]["status"] == 200 and again.json()["items"][0]["run"]["state"] == "succeeded"
    events = await events_of(client, third)
    assert [e["data"]["state"] for e in events if e["kind"] == "state"] == ["queued", "running", "succeeded"]

    # Bad calls: nothing, too many, a bad item, no node header.
    assert (await client.post("/v1/runs/completions", headers=NODE, json={"items": []})).status_code == 422
    many = [{"run_id": fourth, "attempt": 1, "outcome": "succeeded"}] * 501
    assert (await client.post("/v1/runs/completions", headers=NODE, json={"items": many})).status_code == 422
    bad = await client.post("/v1/runs/completions", headers=NODE,
                            json={"items": [{"run_id": fourth, "attempt": 1, "outcome": "done"}]})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    assert (await client.post("/v1/runs/completions", json={"items": items[:1]})).status_code == 400
    # Numbers no run or attempt has: answered as unknown (404) or stale (409), never a 500.
    huge = (await client.post("/v1/runs/completions", headers=NODE, json={"items": [
        {"run_id": 2**63, "attempt": 1, "outcome": "succeeded"}, {"run_id": fourth, "attempt": 9, "outcome": "failed"}]}))
    assert [item["status"] for item in huge.json()["items"]] == [404, 409]
    assert (await client.post(f"/v1/runs/{2**64}/attempts/1/complete", headers=NODE,
                              json={"outcome": "succeeded"})).status_code == 404
    assert (await client.post(f"/v1/runs/{fourth}/attempts/0/complete", headers=NODE,
                              json={"outcome": "succeeded"})).status_code == 409
    assert (await client.get(f"/v1/runs/{fourth}")).json()["state"] == "running"


async def test_a_batch_naming_a_run_twice_is_answered_as_two_calls_in_turn(client):
    """Items of one batch for the same run are decided in turn: a repeat of a completion
    earlier in the batch answers as it did, and one after a retry finds the run queued."""
    await put_agent(client, "tasker", TASKER)
    await register(client, "anvil", "alaiml-task:latest")
    done, retried = [(await client.post("/v1/runs", json={"agent": "tasker", "input": n, "priority": 100})
                      ).json()["id"] for n in ("a", "b")]
    assert sorted(c["run"]["id"] for c in await claim(client, capacity=2)) == [done, retried]
    item = {"run_id": done, "attempt": 1, "outcome": "succeeded", "output": "A", "usage": {"tokens": 3}}
    failed = {"run_id": retried, "attempt": 1, "outcome": "failed", "error": "oom"}
    answer = (await client.post("/v1/runs/completions", headers=NODE,
                                json={"items": [failed, item, failed, item]})).json()["items"]
    assert [a["status"] for a in answer] == [200, 200, 409, 200]
    assert answer[1]["run"] == answer[3]["run"] and answer[1]["run"]["state"] == "succeeded"
    assert answer[0]["run"]["state"] == "queued" and "it is queued" in answer[2]["problem"]["detail"]
    result = (await client.get(f"/v1/runs/{done}/result")).json()
    assert result["output"] == "A" and result["usage"] == {"tokens": 3}
    async def requeued():
        items = (await client.get(f"/v1/runs/{retried}/events")).json()["items"]
        return [e["data"] for e in items if e["kind"] == "state"] if len(items) == 3 else None
    states = await wait_for(requeued)
    assert [s["state"] for s in states] == ["queued", "running", "queued"] and states[-1]["error"] == "oom"
    assert [e["data"]["state"] for e in await events_of(client, done) if e["kind"] == "state"] == [
        "queued", "running", "succeeded"]
    assert "error" not in (await events_of(client, done))[-1]["data"]


async def test_values_the_database_cannot_store_are_a_422_not_a_500(client):
    """A NUL character (PostgreSQL keeps none in text or jsonb) in a run's input, a
    worker's events or its completion: refused as bad input, nothing half-written."""
    await put_agent(client, "tasker", TASKER)
    await register(client, "anvil", "alaiml-task:latest")
    bad_input = await client.post("/v1/runs", json={"agent": "tasker", "input": "a\u0000b"})
    assert bad_input.status_code == 422 and bad_input.headers["content-type"].startswith("application/problem+json")
    run = (await client.post("/v1/runs", json={"agent": "tasker", "input": "fine", "priority": 100})).json()
    for _ in range(20):  # runs other tests left queued may come first
        if (await claim(client))[0]["run"]["id"] == run["id"]:
            break
    else:
        raise AssertionError("the run was never claimed")
    events = await client.post(f"/v1/runs/{run['id']}/attempts/1/events", headers=NODE,
                               json={"events": [{"seq": 0, "kind": "output", "data": {"text": "x\u0000y"}}]})
    assert events.status_code == 422, events.text
    done = await client.post(f"/v1/runs/{run['id']}/attempts/1/complete", headers=NODE,
                             json={"outcome": "succeeded", "output": "nul \u0000 inside"})
    assert done.status_code == 422 and "cannot be stored" in done.json()["detail"]
    assert (await client.get(f"/v1/runs/{run['id']}")).json()["state"] == "running"  # unchanged
    ok = await client.post(f"/v1/runs/{run['id']}/attempts/1/complete", headers=NODE,
                           json={"outcome": "succeeded", "output": "clean"})
    assert ok.status_code == 200 and ok.json()["state"] == "succeeded"


async def test_a_run_takes_the_agents_current_version_though_the_replica_has_seen_an_older(client):
    """The replica keeps the agent versions it has read (service.create's agents_seen); a
    new version or a deletion since is noticed by the insert itself, never used stale."""
    text = CODER.replace("name: coder", "name: versioned")
    v1 = (await put_agent(client, "versioned", text))["version"]
    first = (await client.post("/v1/runs", json={"agent": "versioned", "input": "a"})).json()
    assert first["agent_version"] == v1
    await put_agent(client, "versioned", text.replace("You write code.", "You write tests."))
    second = (await client.post("/v1/runs", json={"agent": "versioned", "input": "b"})).json()
    assert second["agent_version"] == v1 + 1
    third = (await client.post("/v1/runs", json={"agent": "versioned", "input": "c"})).json()
    assert third["agent_version"] == v1 + 1 and third["timeout_seconds"] == 600
    assert (await client.delete("/v1/agents/versioned")).status_code == 204
    gone = await client.post("/v1/runs", json={"agent": "versioned", "input": "d"})
    assert gone.status_code == 422 and gone.json()["errors"][0]["field"] == "body.agent"
    events = (await client.get(f"/v1/runs/{third['id']}/events")).json()["items"]
    assert [e["data"]["state"] for e in events] in ([], ["waiting"])  # one state event, none for the retry
