"""HiveMind across two `alai serve` replicas: concurrent publishers on both, subscribers on
both (some reconnecting mid-stream, one stalled): each sees every message exactly once,
in commit order per topic."""

import contextlib
import json
import threading
import time

import httpx
import psycopg
import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.e2e
TOKEN = "hive-replica-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
PUBLISHERS, EACH = 4, 40


@pytest.fixture
def replicas(serve, database_url):
    env = {"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": TOKEN}
    servers = [serve(env=env), serve(env=env)]
    for server in servers:
        server.wait_ready()
    return servers


def ws_url(server, pattern: str, after: str | None) -> str:
    url = f"{server.url.replace('http://', 'ws://')}/v1/hive/stream?topic={pattern}"
    return url + (f"&after={after}" if after else "")


def test_every_subscriber_gets_every_message_once_in_order(replicas, database_url):
    first, second = replicas
    with httpx.Client(base_url=first.url, headers=HEADERS) as http:
        start = http.post("/v1/hive/topics/setup.start/messages", json={"json": 0}).json()["positions"][0]
    expected = PUBLISHERS * EACH
    results: dict[str, list[tuple[str, int]]] = {}

    def subscriber(name: str, servers, reconnect_every: int | None) -> None:
        received: list[tuple[str, int]] = []
        after, turn = start, 0
        deadline = time.monotonic() + 60
        while len(received) < expected and time.monotonic() < deadline:
            server = servers[turn % len(servers)]
            turn += 1
            try:
                # max_queue=None: leaving with messages buffered must not wait out close_timeout.
                with connect(ws_url(server, "load.>", after), additional_headers=HEADERS, open_timeout=5,
                             max_queue=None, close_timeout=2) as ws:
                    while len(received) < expected:
                        message = json.loads(ws.recv(timeout=10))
                        received.append((message["topic"], message["id"]))
                        after = message["position"]
                        if reconnect_every and len(received) % reconnect_every == 0:
                            break  # drop the connection, resume on the other replica
            except TimeoutError:
                continue
        results[name] = received

    stack = contextlib.ExitStack()
    # Subscribed, never reads: its buffer fills and it is cut off; nobody else waits for it.
    stack.enter_context(connect(ws_url(first, "load.>", None), additional_headers=HEADERS, open_timeout=5))
    readers = [threading.Thread(target=subscriber, args=args) for args in (
        ("steady-1", [first], None), ("steady-2", [second], None), ("hopping", [first, second], 23))]
    for reader in readers:
        reader.start()
    time.sleep(0.5)

    def publisher(index: int) -> None:
        server = replicas[index % 2]
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=10) as http:
            for n in range(EACH):
                topic = f"load.t{n % 3}"
                response = http.post(f"/v1/hive/topics/{topic}/messages", json={"json": {"p": index, "n": n}})
                assert response.status_code == 201

    publishers = [threading.Thread(target=publisher, args=(i,)) for i in range(PUBLISHERS)]
    for thread in publishers:
        thread.start()
    for thread in publishers:
        thread.join(60)
    for reader in readers:
        reader.join(90)
    stack.close()

    with psycopg.connect(database_url) as conn:
        truth = [(topic, message_id) for topic, message_id in conn.execute(
            "SELECT topic, id FROM hive_messages WHERE topic LIKE 'load.%' ORDER BY tx, id")]
    assert len(truth) == expected
    for name, received in results.items():
        assert received == truth, name  # exactly once, in the same (commit) order, on every subscriber
