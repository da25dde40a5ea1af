"""`alai hive` end to end: the CLI as a user runs it, against real `alai serve` processes.

One server for the module; each test publishes to topics of its own. The restart test
has its own two servers on the module's database: one is killed under a subscriber
and brought back on the same port while the other goes on taking messages.
"""

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.cli import ANSI, cli_server, ok, on_a_terminal, one_line_error
from tests.support.processes import ALAI, run_cli

pytestmark = pytest.mark.e2e

TOKEN = "hive-cli-token"


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    with cli_server(tmp_path_factory, "hive-cli", database_url=database_url, token=TOKEN) as process:
        yield process


@pytest.fixture
def env(server) -> dict[str, str]:
    return {"ALAI_SERVER": server.url, "ALAI_TOKEN": TOKEN, "COLUMNS": "200"}


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    """A topic prefix (and memory namespace) no other test uses."""
    return f"t{uuid.uuid4().hex[:8]}"


def hive(env: dict[str, str], *args: str, input: str = "") -> subprocess.CompletedProcess:
    # stdin is always a pipe here (empty unless given), never the terminal pytest runs in.
    return run_cli("hive", *args, env=env, input=input)






def stored(api, topic: str) -> list[dict]:
    return api.get(f"/v1/hive/topics/{topic}/messages", params={"limit": 1000}).json()["items"]


def publish(api, topic: str, **body) -> int:
    """Through the API: where the CLI's `pub` is not what a test is about, it saves a process start."""
    response = api.post(f"/v1/hive/topics/{topic}/messages", json=body)
    assert response.status_code == 201, response.text
    return response.json()["ids"][0]


def concurrently(*calls):
    """Independent CLI runs at once (each is mostly the start of a Python process); results in order."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_publish_from_arguments_and_stdin_then_read_back(env, api, prefix):
    topic = f"{prefix}.status"
    ids = [int(ok(hive(env, "pub", topic, '{"state": "ok"}'))),
           int(ok(hive(env, "pub", topic, "all good"))),
           int(ok(hive(env, "pub", topic, "42", "--text", "--key", "k1", "-H", "trace=abc", "-H", "x=1=2"))),
           int(ok(hive(env, "pub", topic, input='["from", "stdin"]\n'))),
           int(ok(hive(env, "pub", topic, "-", input="two\nlines\n")))]
    assert ids == sorted(ids) and len(set(ids)) == 5  # piped: the id alone, for scripts
    answer = json.loads(ok(hive(env, "pub", topic, "null", "--json-payload", "--json")))
    assert answer["topic"] == topic and len(answer["ids"]) == 1 and re.fullmatch(r"\d+-\d+", answer["positions"][0])
    ids.append(answer["ids"][0])

    described = api.put(f"/v1/hive/topics/{topic}", json={"description": "Agents say how they are",
                                                            "retention_max_age_seconds": 3 * 86400,
                                                            "retention_max_count": 1000})
    assert described.status_code == 200

    history, people, newest, after, recent, future, listed, table = concurrently(
        lambda: hive(env, "history", topic, "--json"),
        lambda: hive(env, "history", topic),
        lambda: hive(env, "history", topic, "--desc", "--limit", "2", "--json"),
        lambda: hive(env, "history", topic, "--after", str(ids[3]), "--json"),
        lambda: hive(env, "history", topic, "--since", "1h", "--json"),
        lambda: hive(env, "history", topic, "--since", "2999-01-01"),
        lambda: hive(env, "topics", "--json"),
        lambda: hive(env, "topics"))
    messages = json.loads(ok(history))
    assert [m["id"] for m in messages] == ids
    assert [(m["content_type"], m["payload"]) for m in messages] == [
        ("json", {"state": "ok"}), ("text", "all good"), ("text", "42"), ("json", ["from", "stdin"]),
        ("text", "two\nlines"), ("json", None)]
    assert messages[2]["key"] == "k1" and messages[2]["headers"] == {"trace": "abc", "x": "1=2"}
    assert {m["sender"] for m in messages} == {"admin-token"}

    lines = ok(people).splitlines()
    assert len(lines) == 6
    assert re.fullmatch(rf"\d\d:\d\d:\d\d #{ids[0]} {re.escape(topic)} admin-token  " + r'\{"state":"ok"\}',
                        lines[0])
    assert lines[2].endswith(f"#{ids[2]} {topic} admin-token [k1]  42")
    assert lines[4].endswith("  two lines")  # one line per message

    assert [m["id"] for m in json.loads(ok(newest))] == [ids[5], ids[4]]
    assert newest.stderr.strip() == f"2 shown; more with --after {ids[4]} --desc"
    assert [m["id"] for m in json.loads(ok(after))] == ids[4:]
    assert [m["id"] for m in json.loads(ok(recent))] == ids
    assert ok(future) == "" and future.stderr.strip() == f"no messages in {topic} match --after/--since"

    by_name = {t["name"]: t for t in json.loads(ok(listed))}
    assert by_name[topic]["message_count"] == 6 and by_name[topic]["retention_max_count"] == 1000
    rows = ok(table).splitlines()
    assert rows[0].split() == ["TOPIC", "MESSAGES", "LAST", "RETENTION", "DESCRIPTION"]
    row = next(line for line in rows if line.startswith(topic + " "))
    assert re.match(rf"{re.escape(topic)}\s+6\s+\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\s+3d, 1,000 msgs\s+"
                    r"Agents say how they are$", row)


def test_batches_and_idempotent_retries(env, api, prefix):
    topic = f"{prefix}.batch"
    printed = ok(hive(env, "pub", topic, "--batch", input='{"n": 1}\n\n"two"\nthree words\n[4]\n')).split()
    assert len(printed) == 4 and printed == sorted(printed, key=int)
    assert [(m["content_type"], m["payload"]) for m in stored(api, topic)] == [
        ("json", {"n": 1}), ("json", "two"), ("text", "three words"), ("json", [4])]

    # More than one request holds: 2,500 lines go as 1,000 + 1,000 + 500, in order.
    big = f"{prefix}.big"
    answer = json.loads(ok(hive(env, "pub", big, "--batch", "--json",
                                input="".join(json.dumps({"i": i}) + "\n" for i in range(2500)))))
    assert len(answer["ids"]) == 2500 and answer["ids"] == sorted(answer["ids"])
    page = api.get(f"/v1/hive/topics/{big}/messages", params={"limit": 1000, "after_id": answer["ids"][1499]}).json()
    assert [m["payload"]["i"] for m in page["items"]] == list(range(1500, 2500))

    # The same Idempotency-Key stores a message once, and answers with the same id.
    once = f"{prefix}.once"
    first = ok(hive(env, "pub", once, "hello", "--idempotency-key", f"{prefix}-k"))
    again = ok(hive(env, "pub", once, "hello", "--idempotency-key", f"{prefix}-k"))
    assert first == again and len(stored(api, once)) == 1
    reused = one_line_error(hive(env, "pub", once, "something else", "--idempotency-key", f"{prefix}-k"))
    assert "used for a different request; use a new key" in reused


class Subscriber:
    """`alai hive sub` in a subprocess; its output read line by line without blocking the test."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen([*ALAI, "hive", "sub", *args], env={**os.environ, **env}, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: queue.Queue[str] = queue.Queue()
        self.pumps = [threading.Thread(target=self._pump, args=(stream, lines), daemon=True)
                      for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))]
        for pump in self.pumps:
            pump.start()

    @staticmethod
    def _pump(stream, lines: queue.Queue) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))

    def wait_subscribed(self, timeout: float = 15.0) -> None:
        line = self.stderr.get(timeout=timeout)
        assert line.startswith("subscribed to "), line

    def take(self, n: int, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while len(lines) < n:
            left = deadline - time.monotonic()
            try:
                lines.append(self.stdout.get(timeout=max(left, 0.01)))
            except queue.Empty:
                raise AssertionError(f"{len(lines)} of {n} lines within {timeout} s: {lines}; "
                                     f"stderr: {list(self.stderr.queue)}") from None
        return lines

    def nothing_more(self, within: float) -> bool:
        try:
            extra = self.stdout.get(timeout=within)
        except queue.Empty:
            return True
        raise AssertionError(f"unexpected line {extra!r}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(10)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
            for pump in self.pumps:
                pump.join(5)
            self.process.stdout.close()
            self.process.stderr.close()


def test_sub_prints_what_is_published_meanwhile_in_order(env, api, prefix):
    as_json = Subscriber(env, f"{prefix}.*", "--json")
    for_people = Subscriber(env, f"{prefix}.>")
    counted = Subscriber(env, f"{prefix}.a", "--count", "2", "--json")
    try:
        for subscriber in (as_json, for_people, counted):
            subscriber.wait_subscribed()
        ids = [publish(api, f"{prefix}.a", json={"n": 1}), publish(api, f"{prefix}.b", text="hello there"),
               publish(api, f"{prefix}.a.deep", json="only >"), publish(api, f"{prefix}x.a", text="other prefix"),
               publish(api, f"{prefix}.a", json=[3], key="k")]
        got = [json.loads(line) for line in as_json.take(3)]
        assert [m["id"] for m in got] == [ids[0], ids[1], ids[4]]  # * is one segment; the other prefix is not it
        assert [m["payload"] for m in got] == [{"n": 1}, "hello there", [3]]
        people = for_people.take(4)
        assert [line.split()[1:3] for line in people] == [
            [f"#{ids[0]}", f"{prefix}.a"], [f"#{ids[1]}", f"{prefix}.b"], [f"#{ids[2]}", f"{prefix}.a.deep"],
            [f"#{ids[4]}", f"{prefix}.a"]]
        assert people[1].endswith(" admin-token  hello there") and people[3].endswith(" admin-token [k]  [3]")
        assert [json.loads(line)["id"] for line in counted.take(2)] == [ids[0], ids[4]]
        assert counted.process.wait(10) == 0  # --count: it stops by itself
        assert as_json.nothing_more(0.3) and for_people.nothing_more(0.01)
    finally:
        codes = [as_json.stop(), for_people.stop()]
        counted.stop()
    assert codes == [0, 0]  # Ctrl-C is how a subscription ends
    assert list(as_json.stderr.queue) == []  # quietly: no traceback, no "Aborted"

    # --from: what is stored after an id is replayed first; --timeout stops a script that waits too long.
    replay = hive(env, "sub", f"{prefix}.a", "--from", str(ids[0]), "--json", "--count", "5", "--timeout", "1.5")
    assert replay.returncode == 1 and [json.loads(line)["id"] for line in replay.stdout.splitlines()] == [ids[4]]
    assert replay.stderr.strip().splitlines()[-1] == "Error: only 1 of 5 messages within 1.5 s"
    quiet = hive(env, "sub", f"{prefix}.nothing", "--timeout", "0.5")
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_sub_stops_quietly_when_its_reader_goes_away(env, api, prefix):
    topic = f"{prefix}.pipe"
    first = publish(api, topic, json=1)
    subscriber = subprocess.Popen([*ALAI, "hive", "sub", topic, "--from", "0", "--json"], env={**os.environ, **env},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert json.loads(subscriber.stdout.readline())["id"] == first
        subscriber.stdout.close()  # `| head -1` is done reading
        publish(api, topic, json=2)  # the next write finds nobody there
        assert subscriber.wait(15) == 0
        assert b"Traceback" not in subscriber.stderr.read()
    finally:
        if subscriber.poll() is None:
            subscriber.kill()
            subscriber.wait(5)
        subscriber.stderr.close()


def test_a_subscriber_outlives_its_server_being_killed(serve, database_url, prefix):
    """SIGKILL under a live `sub` while messages keep coming through another replica; the server comes
    back on the same port and the subscriber resumes: every message once, in order, none lost."""
    server_env = {"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": TOKEN}
    victim, other = serve(env=server_env), serve(env=server_env)
    victim.wait_ready()
    other.wait_ready()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    subscriber = Subscriber({"ALAI_SERVER": victim.url, "ALAI_TOKEN": TOKEN}, f"{prefix}.>", "--json")
    try:
        subscriber.wait_subscribed()
        with httpx.Client(base_url=victim.url, headers=headers, timeout=10) as api:
            before = [publish(api, f"{prefix}.a", json=n) for n in range(3)]
        assert [json.loads(line)["id"] for line in subscriber.take(3)] == before

        around: list[int] = []
        stop = threading.Event()

        def keep_publishing() -> None:
            with httpx.Client(base_url=other.url, headers=headers, timeout=10) as api:
                while not stop.is_set():
                    around.append(publish(api, f"{prefix}.b", json=len(around)))
                    time.sleep(0.02)

        publisher = threading.Thread(target=keep_publishing)
        publisher.start()
        try:
            time.sleep(0.2)
            victim.process.send_signal(signal.SIGKILL)
            victim.process.wait(10)
            serve(env=server_env, port=victim.port).wait_ready()
            time.sleep(0.2)
        finally:
            stop.set()
            publisher.join(10)
        with httpx.Client(base_url=victim.url, headers=headers, timeout=10) as api:  # the new one, same URL
            after = [publish(api, f"{prefix}.a", json=n) for n in range(2)]

        expected = around + after
        assert len(around) > 10
        got = [json.loads(line)["id"] for line in subscriber.take(len(expected), timeout=30)]
        assert got == expected  # no gap, no duplicate, in order
        assert subscriber.nothing_more(0.5)
        assert any(line.startswith("connection lost") for line in subscriber.stderr.queue)
    finally:
        assert subscriber.stop() == 0


def test_shared_memory(env, api, prefix):
    ns = prefix
    set_plan, set_note, set_count, set_label = concurrently(
        lambda: hive(env, "mem", "set", ns, "plan/2026/q1", '{"goal": "ship"}'),
        lambda: hive(env, "mem", "set", ns, "note", "just words"),
        lambda: hive(env, "mem", "set", ns, "count", "-", input="41\n"),
        lambda: hive(env, "mem", "set", ns, "label", "7", "--text"))
    assert ok(set_plan).strip() == f"{ns}/plan/2026/q1 version 1" and ok(set_note).strip() == f"{ns}/note version 1"
    ok(set_count), ok(set_label)
    values = concurrently(*(lambda key=key: hive(env, "mem", "get", ns, key)
                            for key in ("plan/2026/q1", "note", "count", "label")))
    # Not JSON is kept as the string typed; --text keeps even JSON as a string.
    assert [json.loads(ok(value)) for value in values] == [{"goal": "ship"}, "just words", 41, "7"]
    assert api.get(f"/v1/hive/memory/{ns}/plan/2026/q1").json()["value"] == {"goal": "ship"}

    # If-Match: the right version writes; a stale one changes nothing and says what to do.
    assert ok(hive(env, "mem", "set", ns, "count", "42", "--if-version", "1")).strip() == f"{ns}/count version 2"
    stale, stale_rm, missing, entry, listed, planned, table, limited = concurrently(
        lambda: hive(env, "mem", "set", ns, "count", "0", "--if-version", "1"),
        lambda: hive(env, "mem", "rm", ns, "count", "--if-version", "1"),
        lambda: hive(env, "mem", "set", ns, "new", "1", "--if-version", "3"),
        lambda: hive(env, "mem", "get", ns, "count", "--json"),
        lambda: hive(env, "mem", "ls", ns, "--json"),
        lambda: hive(env, "mem", "ls", ns, "--prefix", "plan/", "--json"),
        lambda: hive(env, "mem", "ls", ns),
        lambda: hive(env, "mem", "ls", ns, "--limit", "2"))
    assert one_line_error(stale) == (f"Error: {ns}/count is at version 2, not 1: someone changed it; look with "
                                     f"`alai hive mem get {ns} count` and run again with --if-version 2")
    assert "is at version 2, not 1" in one_line_error(stale_rm)
    assert "does not exist (any more), so it is not at version 3; drop --if-version to create it" in \
        one_line_error(missing)
    entry = json.loads(ok(entry))
    assert entry["value"] == 42 and entry["version"] == 2 and entry["updated_by"] == "admin-token"
    assert [e["key"] for e in json.loads(ok(listed))] == ["count", "label", "note", "plan/2026/q1"]
    assert [e["key"] for e in json.loads(ok(planned))] == ["plan/2026/q1"]
    rows = ok(table).splitlines()
    assert rows[0].split() == ["KEY", "VERSION", "UPDATED", "BY", "VALUE"]
    assert re.match(r"plan/2026/q1\s+1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+admin-token\s+\{\"goal\":\"ship\"\}$",
                    rows[4])
    assert len(ok(limited).splitlines()) == 3 and "there are more" in limited.stderr
    exact = hive(env, "mem", "ls", ns, "--limit", "4")
    assert len(ok(exact).splitlines()) == 5 and "more" not in exact.stderr

    assert ok(hive(env, "mem", "rm", ns, "count", "--if-version", "2")).strip() == f"deleted {ns}/count"
    assert ok(hive(env, "mem", "rm", ns, "plan/2026/q1")).strip() == f"deleted {ns}/plan/2026/q1"
    gone, left = concurrently(lambda: hive(env, "mem", "get", ns, "count"), lambda: hive(env, "mem", "ls", ns, "--json"))
    assert re.fullmatch(rf"Error: no memory {ns}/count \(HTTP 404, request \w+\)", one_line_error(gone))
    assert [e["key"] for e in json.loads(ok(left))] == ["label", "note"]
    changes = [m["payload"] for m in stored(api, f"hive.memory.{ns}")]
    assert [(c["change"], c["key"]) for c in changes][-2:] == [("deleted", "count"), ("deleted", "plan/2026/q1")]


def test_mistakes_are_one_line_with_the_fix(env, api, prefix):
    down = {"ALAI_SERVER": "http://127.0.0.1:9", "ALAI_TOKEN": TOKEN}
    (bad_topic, bad_history, bad_pattern, no_such_id, not_json, bad_line, empty, too_big, bad_header, slashed,
     spaced, both, unreachable, unreachable_sub) = concurrently(
        lambda: hive(env, "pub", "agents/status", "x"),
        lambda: hive(env, "history", "bad topic"),
        lambda: hive(env, "sub", f"{prefix}.>.x"),
        lambda: hive(env, "sub", "x", "--from", "999999999"),
        lambda: hive(env, "pub", f"{prefix}.x", "{oops", "--json-payload"),
        lambda: hive(env, "pub", f"{prefix}.x", "--batch", "--json-payload", input='1\n{"a":\n3\n'),
        lambda: hive(env, "pub", f"{prefix}.x", input=""),
        lambda: hive(env, "pub", f"{prefix}.x", "-", input="x" * (256 * 1024 + 1)),
        lambda: hive(env, "pub", f"{prefix}.x", "1", "-H", "novalue"),
        lambda: hive(env, "mem", "get", "a/b", "c"),
        lambda: hive(env, "mem", "set", prefix, "with space", "1"),
        lambda: hive(env, "pub", f"{prefix}.x", "1", "--text", "--json-payload"),
        lambda: hive(down, "topics"),
        lambda: hive(down, "sub", "x"))
    assert one_line_error(bad_topic) == ("Error: 'agents/status' is not a topic name: use dotted segments of letters, "
                                         "digits, _ and - (agents.status)")
    assert "is not a topic name" in one_line_error(bad_history)
    assert one_line_error(bad_pattern).startswith(
        f"Error: '{prefix}.>.x' is not a pattern: segments are names, `*` (one segment) or a final `>` (the rest) "
        "(HTTP 422")
    assert "there is no message 999999999" in one_line_error(no_such_id)
    assert one_line_error(not_json).startswith("Error: the message is not valid JSON (")
    assert "drop --json-payload" in not_json.stderr
    assert one_line_error(bad_line).startswith("Error: line 2 is not valid JSON (")
    assert one_line_error(empty) == "Error: the message is empty; nothing was published"
    assert one_line_error(too_big) == ("Error: the message is too large: 262,147 bytes as JSON; at most 262,144 "
                                       "(256 KiB) are allowed")
    assert one_line_error(bad_header) == "Error: --header 'novalue' must be NAME=VALUE"
    assert "must be a name without '/'" in one_line_error(slashed)
    assert "must be 1-200 letters" in one_line_error(spaced)
    assert both.returncode == 2 and "exclude each other" in both.stderr
    assert api.get(f"/v1/hive/topics/{prefix}.x").status_code == 404  # none of it was published
    assert "cannot reach http://127.0.0.1:9" in one_line_error(unreachable)
    assert "cannot reach http://127.0.0.1:9" in one_line_error(unreachable_sub)



def test_colours_on_a_terminal_and_never_with_no_color(env, prefix):
    topic = f"{prefix}.colour"
    ok(hive(env, "pub", topic, "hello"))
    terminal = {**env, "TERM": "xterm-256color"}
    coloured = on_a_terminal(terminal, "hive", "history", topic)
    assert ANSI.search(coloured) and "hello" in coloured
    plain = on_a_terminal({**terminal, "NO_COLOR": "1"}, "hive", "history", topic)
    assert "hello" in plain and not ANSI.search(plain)
    assert f"to {topic}" in on_a_terminal(env, "hive", "pub", topic, "chatty")  # a person is told more than the id


def test_the_hive_commands_never_import_the_server():
    probe = (
        "import json, sys\nfrom click.testing import CliRunner\nfrom alai.cli.main import root\n"
        "for args in (['hive', '--help'], ['hive', 'topics'], ['hive', 'pub', 'a', '1'], ['hive', 'sub', 'a'],\n"
        "             ['hive', 'mem', 'get', 'a', 'b']):\n"
        "    CliRunner().invoke(root, args, env={'ALAI_SERVER': 'http://127.0.0.1:9', 'ALAI_TOKEN': 't'})\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "alai.cli.hive_sub" in loaded and [name for name in loaded if name.startswith("alai.server")] == []
