"""HiveMind across two `alai serve` replicas: concurrent publishers on both, subscribers on
both (some reconnecting mid-stream, one stalled): each sees every message exactly once,
in commit order per topic."""

import contextlib
import json
import socket
import threading
import time

import httpx
import psycopg
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.e2e
TOKEN = "hive-replica-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
PUBLISHERS, EACH = 4, 40
PAD = "x" * 64_000  # 160 messages of 64 KB: 10 MB, past what the kernel holds for a stalled reader (~4 MB)


@pytest.fixture
def replicas(serve, database_url):
    env = {"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": TOKEN}
    # The first replica's subscribers may fall only 20 messages behind: the stalled one
    # below overflows for certain; a reader that falls behind in a burst resumes.
    servers = [serve(env=env | {"ALAI_HIVE_SUBSCRIBER_BUFFER": "20"}), serve(env=env)]
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
                        if message.get("overflow"):  # behind by more than the buffer: resume, as clients do
                            after = message["resume_from"]
                            break
                        received.append((message["topic"], message["id"]))
                        after = message["position"]
                        if reconnect_every and len(received) % reconnect_every == 0:
                            break  # drop the connection, resume on the other replica
            except TimeoutError:
                continue
        results[name] = received

    stack = contextlib.ExitStack()
    # Subscribed, reads nothing until the end, with a tiny receive buffer: the socket
    # fills, then its 20 messages of queue; it is told where to resume and cut off,
    # and nobody else waits for it.
    host, port = first.url.removeprefix("http://").split(":")
    tiny = socket.socket()
    tiny.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    tiny.connect((host, int(port)))
    # max_queue=1: the client's reading thread stops after one message nobody took.
    stalled = stack.enter_context(connect(ws_url(first, "load.>", start), sock=tiny, additional_headers=HEADERS,
                                          open_timeout=5, max_queue=1))
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
                response = http.post(f"/v1/hive/topics/{topic}/messages",
                                     json={"json": {"p": index, "n": n, "pad": PAD}})
                assert response.status_code == 201

    publishers = [threading.Thread(target=publisher, args=(i,)) for i in range(PUBLISHERS)]
    for thread in publishers:
        thread.start()
    for thread in publishers:
        thread.join(60)
    for reader in readers:
        reader.join(90)
    frames = []
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        while True:
            frames.append(json.loads(stalled.recv(timeout=10)))
    stack.close()

    with psycopg.connect(database_url) as conn:
        truth = [(topic, message_id) for topic, message_id in conn.execute(
            "SELECT topic, id FROM hive_messages WHERE topic LIKE 'load.%' ORDER BY tx, id")]
    assert len(truth) == expected
    for name, received in results.items():
        assert received == truth, name  # exactly once, in the same (commit) order, on every subscriber
    *before, notice = frames
    assert notice["overflow"] and len(before) < expected
    assert [(m["topic"], m["id"]) for m in before] == truth[:len(before)]  # what it got, it got in order
    assert notice["resume_from"] == (before[-1]["position"] if before else start)
    assert stalled.close_code == 1013
