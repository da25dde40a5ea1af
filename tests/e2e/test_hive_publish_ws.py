"""HiveMind's publishing WebSocket and group commit, against a real `alai serve`:
pipelined frames answered in order after their commit, concurrent publishers sharing
transactions, a bad frame failing alone, scopes, and subscribers' batch frames."""

import json
import subprocess
import sys
import threading

import httpx
import psycopg
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.support.processes import start_serve

pytestmark = pytest.mark.e2e
TOKEN = "hive-publish-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("hive-publish")
    process = start_serve(env={"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": TOKEN,
                               "ALAI_DATA_DIR": str(base / "data"), "HOME": str(base)}, log_path=base / "serve.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.process.terminate()
        process.process.wait(30)


def ws(server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def publish_all(server, frames: list[dict]) -> list[dict]:
    """Sends every frame before reading any answer (pipelined); returns the answers."""
    with connect(ws(server, "/v1/hive/publish"), additional_headers=HEADERS) as socket:
        for frame in frames:
            socket.send(json.dumps(frame) if isinstance(frame, dict) else frame)
        return [json.loads(socket.recv(timeout=20)) for _ in frames]


def stored(database_url: str, topic: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT id, tx::text, payload FROM hive_messages WHERE topic = %s ORDER BY id",
                            (topic,)).fetchall()


def test_pipelined_frames_are_answered_in_order_after_their_commit(server, database_url):
    answers = publish_all(server, [{"topic": "pipe.one", "ref": n, "json": {"n": n}} for n in range(300)])
    assert [answer["ref"] for answer in answers] == list(range(300))
    ids = [answer["id"] for answer in answers]
    assert ids == sorted(ids) and len(set(ids)) == 300
    rows = stored(database_url, "pipe.one")
    assert [row[0] for row in rows] == ids and [row[2] for row in rows] == [{"n": n} for n in range(300)]
    assert [f"{row[1]}-{row[0]}" for row in rows] == [answer["position"] for answer in answers]

    several = publish_all(server, [{"topic": "pipe.one", "ref": "b", "messages": [{"text": "x"}, {"json": [1]}]}])
    assert several[0]["ref"] == "b" and len(several[0]["ids"]) == 2 and len(several[0]["positions"]) == 2


def test_concurrent_publishers_share_transactions(server, database_url):
    per_thread, threads = 200, 4
    results: dict[int, list[dict]] = {}

    def run(index: int) -> None:
        results[index] = publish_all(server, [{"topic": "pipe.group", "ref": n, "json": {"p": index, "n": n}}
                                              for n in range(per_thread)])

    workers = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    rows = stored(database_url, "pipe.group")
    assert len(rows) == per_thread * threads
    by_id = {row[0]: row[2] for row in rows}
    for index, answers in results.items():
        assert [by_id[answer["id"]] for answer in answers] == [{"p": index, "n": n} for n in range(per_thread)]
    transactions = {row[1] for row in rows}
    assert len(transactions) < len(rows)  # grouped: fewer commits than messages
    with psycopg.connect(database_url) as conn:
        count = conn.execute("SELECT message_count FROM hive_topics WHERE name = 'pipe.group'").fetchone()[0]
    assert count == per_thread * threads


def test_a_bad_frame_fails_alone(server, database_url):
    frames = [
        {"topic": "pipe.bad", "ref": "ok-1", "json": 1},
        "not json at all",
        {"topic": "bad topic", "ref": "topic", "json": 1},
        {"topic": "pipe.bad", "ref": "both", "json": 1, "text": "x"},
        {"topic": "pipe.bad", "ref": "big", "text": "x" * (300 * 1024)},
        {"topic": "pipe.bad", "ref": "nul", "text": "a\u0000b"},  # jsonb refuses it: fails in the database
        {"ref": "no-topic", "json": 1},
        {"topic": "pipe.bad", "ref": "ok-2", "json": 2},
    ]
    answers = publish_all(server, frames)
    by_ref = {answer["ref"]: answer for answer in answers}
    assert answers[1]["ref"] is None and answers[1]["error"]["status"] == 400
    assert by_ref["topic"]["error"]["status"] == 422 and "topic" in by_ref["topic"]["error"]["detail"]
    assert by_ref["both"]["error"]["status"] == 422
    assert by_ref["big"]["error"]["status"] == 413
    assert by_ref["nul"]["error"]["status"] == 422
    assert by_ref["no-topic"]["error"]["status"] == 422
    assert "id" in by_ref["ok-1"] and "id" in by_ref["ok-2"]
    assert [row[2] for row in stored(database_url, "pipe.bad")] == [1, 2]


def test_publishing_needs_a_token_with_hive_write(server, database_url, tmp_path):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws(server, "/v1/hive/publish"))
    assert refused.value.response.status_code == 401
    created = subprocess.run([sys.executable, "-m", "alai", "admin", "token", "create", "--name", "reader",
                              "--scopes", "hive:read", "--json"], capture_output=True, text=True, timeout=60,
                             env={"ALAI_DATABASE_URL": database_url, "HOME": str(tmp_path),
                                  "PATH": "/usr/bin:/bin"})
    assert created.returncode == 0, created.stderr
    reader = json.loads(created.stdout)["token"]
    with pytest.raises(InvalidStatus) as forbidden:
        connect(ws(server, "/v1/hive/publish"), additional_headers={"Authorization": f"Bearer {reader}"})
    assert forbidden.value.response.status_code == 403
    with connect(ws(server, "/v1/hive/stream?topic=pipe.read"),
                 additional_headers={"Authorization": f"Bearer {reader}"}):
        pass  # reading is allowed


def test_batch_frames_carry_what_is_ready_together_in_order(server):
    with connect(ws(server, "/v1/hive/stream?topic=pipe.batch&batch=true"), additional_headers=HEADERS) as batched, \
            connect(ws(server, "/v1/hive/stream?topic=pipe.batch"), additional_headers=HEADERS) as single:
        answers = publish_all(server, [{"topic": "pipe.batch", "ref": n, "json": n} for n in range(200)])
        assert all("id" in answer for answer in answers)
        got_batched, frames = [], 0
        while len(got_batched) < 200:
            frame = json.loads(batched.recv(timeout=20))
            assert isinstance(frame, list) and frame
            got_batched.extend(frame)
            frames += 1
        got_single = [json.loads(single.recv(timeout=20)) for _ in range(200)]
    assert [m["payload"] for m in got_batched] == list(range(200))
    assert got_batched == got_single
    assert frames < 200  # several messages per frame when they are ready together


def chunks_by_path(server) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = {}
    for line in text.splitlines():
        if line.startswith('alai_stream_chunks_total{'):
            labels, value = line.rsplit(" ", 1)
            if 'stream="hive"' in labels:
                found[labels.split('path="')[1].split('"')[0]] = float(value)
    return found


def test_live_subscribers_are_written_to_directly_and_a_closed_one_is_not(server):
    """Under `alai serve` the fan-out writes prepared frames to live subscribers' connections
    (server/ws_direct.py): the frames arrive whole and in order, counted on /metrics as direct."""
    with connect(ws(server, "/v1/hive/stream?topic=pipe.direct&batch=true"), additional_headers=HEADERS) as first, \
            connect(ws(server, "/v1/hive/stream?topic=pipe.direct"), additional_headers=HEADERS) as second:
        with connect(ws(server, "/v1/hive/stream?topic=pipe.direct"), additional_headers=HEADERS):
            pass  # subscribed, then gone before anything is published

        def publish_and_receive(numbers: range) -> None:
            answers = publish_all(server, [{"topic": "pipe.direct", "ref": n, "json": {"n": n}} for n in numbers])
            assert all("id" in answer for answer in answers)
            batched: list[dict] = []
            while len(batched) < len(numbers):
                batched.extend(json.loads(first.recv(timeout=20)))
            single = [json.loads(second.recv(timeout=20)) for _ in numbers]
            assert [m["payload"] for m in batched] == [{"n": n} for n in numbers] and single == batched

        # Until a subscriber's first live chunk (its start may be ahead of the hub's position)
        # its chunks are queued; once it has consumed them, the fan-out writes to it directly.
        publish_and_receive(range(5))
        before = chunks_by_path(server)
        publish_and_receive(range(5, 55))
    after = chunks_by_path(server)
    assert after["direct"] > before.get("direct", 0)
    assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200  # nothing broke on the closed one
