"""The live stream across two `alai serve` replicas with concurrent writers: a client that
drops and reconnects to the other replica with the last id it saw gets every change, in
order, once. Also: the WebSocket refuses a missing or scopeless token at the handshake."""

import json
import threading
import time

import httpx
import psycopg
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.e2e
TOKEN = "replica-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def replicas(serve, database_url):
    env = {"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": TOKEN}
    first, second = serve(env=env), serve(env=env)
    first.wait_ready()
    second.wait_ready()
    return first, second


def ws_url(server, after=None) -> str:
    base = server.url.replace("http://", "ws://") + "/v1/mc/stream"
    return base + (f"?after={after}" if after is not None else "")


def write_concurrently(servers, writers: int, each: int) -> list[str]:
    created: list[str] = []
    errors: list[str] = []

    def writer(index: int) -> None:
        server = servers[index % len(servers)]
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=10) as http:
            for n in range(each):
                response = http.post("/v1/mc/tasks", json={"title": f"w{index}-{n}"})
                if response.status_code != 201:
                    errors.append(response.text)
                    continue
                task_id = response.json()["id"]
                created.append(task_id)
                http.patch(f"/v1/mc/tasks/{task_id}", json={"status": "in_progress"})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    return created


def test_resume_on_the_other_replica_loses_nothing(replicas, database_url):
    first, second = replicas
    with psycopg.connect(database_url) as conn:
        start = conn.execute("SELECT coalesce(max(id), 0) FROM mc_events").fetchone()[0]
    received: list[int] = []
    kinds: list[tuple[str, str]] = []
    done = threading.Event()

    def subscriber() -> None:
        after = start
        target = first
        while not done.is_set() or len(received) < expected_total[0]:
            try:
                # max_queue=None: the client leaves with events still buffered; with websockets'
                # flow control on, its close() then waits out close_timeout (10 s) every time.
                with connect(ws_url(target, after), additional_headers=HEADERS, open_timeout=5, max_queue=None,
                             close_timeout=2) as ws:
                    # Drop the connection after a few events, then resume on the other replica.
                    for _ in range(7):
                        message = json.loads(ws.recv(timeout=5))
                        received.append(message["id"])
                        kinds.append((message["task_id"], message["kind"]))
                        after = message["position"]
            except TimeoutError:
                if done.is_set() and len(received) >= expected_total[0]:
                    return
            except OSError:  # a replica too busy to accept now: the other one will do
                time.sleep(0.1)
            target = second if target is first else first

    expected_total = [10**9]
    reader = threading.Thread(target=subscriber, daemon=True)
    reader.start()
    time.sleep(0.3)
    write_concurrently([first, second], writers=4, each=15)
    with psycopg.connect(database_url) as conn:
        all_ids = [row[0] for row in conn.execute("SELECT id FROM mc_events WHERE id > %s ORDER BY tx, id",
                                                  (start,))]
    expected_total[0] = len(all_ids)
    done.set()
    reader.join(180)  # generous: on a loaded 2-core machine the 120 events can take a while
    assert not reader.is_alive(), f"the subscriber got {len(received)} of {len(all_ids)} events in 180 s"
    assert len(all_ids) == 4 * 15 * 2
    assert received == all_ids  # every change, in order, exactly once, across reconnects and replicas
    # Each task's own changes arrive in the order they happened: created, then updated.
    per_task: dict[str, list[str]] = {}
    for task_id, kind in kinds:
        per_task.setdefault(task_id, []).append(kind)
    assert all(sequence == ["created", "updated"] for sequence in per_task.values())


def test_sse_stream_on_a_real_server(replicas):
    first, second = replicas
    with httpx.Client(base_url=first.url, headers=HEADERS, timeout=10) as http:
        start = http.get("/v1/mc/events", params={"after": "0", "limit": 1000}).json()
        after = start[-1]["position"] if start else "0"
        lines: list[str] = []

        def read() -> None:
            with httpx.stream("GET", f"{first.url}/v1/mc/events/stream", headers={**HEADERS, "Last-Event-ID":
                              after}, timeout=10) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    lines.append(line)
                    if line.startswith("data:"):
                        return

        thread = threading.Thread(target=read)
        thread.start()
        time.sleep(0.3)
        # Written through the other replica: the wake-up crosses processes via NOTIFY.
        httpx.post(f"{second.url}/v1/mc/tasks", headers=HEADERS, json={"title": "via replica two"})
        thread.join(10)
    assert "event: created" in lines and "via replica two" in lines[-1]


def test_websocket_needs_a_token_and_the_scope(replicas):
    first, _ = replicas
    with pytest.raises(InvalidStatus) as missing:
        connect(ws_url(first), open_timeout=5)
    assert missing.value.response.status_code == 401
    token = httpx.post(f"{first.url}/v1/identity/tokens", headers=HEADERS,
                       json={"name": "no-mc", "scopes": ["hive:read"]}).json()["token"]
    with pytest.raises(InvalidStatus) as forbidden:
        connect(ws_url(first), additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=5)
    assert forbidden.value.response.status_code == 403
