"""`alai hive` pure helpers, and the commands against a fake transport: resuming after an overflow,
the publish retry with one Idempotency-Key, batches split into requests, --timeout."""

import functools
import json
import re
import signal
import time
from datetime import UTC, datetime, timedelta

import click
import httpx
import pytest
from click.testing import CliRunner

from alai.cli import hive as hive_cli
from alai.cli.main import root
from alai.client import http
from alai.wire.hive import Message

ENV = {"ALAI_SERVER": "http://hive.test", "ALAI_TOKEN": "t"}


@pytest.mark.parametrize(("typed", "mode", "expected"), [
    ('{"a": 1}', "auto", {"json": {"a": 1}}),
    ("42", "auto", {"json": 42}),
    ("null", "auto", {"json": None}),
    ("hello world", "auto", {"text": "hello world"}),
    ("NaN", "auto", {"text": "NaN"}),  # Python's json would take it; JSON does not
    ("42", "text", {"text": "42"}),
    ('"quoted"', "json", {"json": "quoted"}),
])
def test_a_message_is_json_when_it_parses_else_text(typed, mode, expected):
    assert hive_cli.message_body(typed, mode) == expected


def test_forced_json_and_oversized_messages_are_one_line_errors():
    with pytest.raises(click.ClickException, match=r"^line 3 is not valid JSON \(Expecting value: line 1 column 1"):
        hive_cli.message_body("nope", "json", "line 3")
    assert hive_cli.message_body("x" * (256 * 1024 - 2), "text") == {"text": "x" * (256 * 1024 - 2)}
    with pytest.raises(click.ClickException, match=r"^the message is too large: 262,145 bytes as JSON; at most "
                                                   r"262,144 \(256 KiB\) are allowed$"):
        hive_cli.message_body("x" * (256 * 1024 - 1), "text")


def test_headers_are_name_equals_value():
    assert hive_cli.parse_headers(["a=1", " b =x=y", "empty="]) == {"a": "1", "b": "x=y", "empty": ""}
    for bad in ("novalue", "=x"):
        with pytest.raises(click.ClickException, match="must be NAME=VALUE"):
            hive_cli.parse_headers([bad])


def test_topic_names_are_checked_with_the_wires_pattern():
    assert hive_cli.check_topic("agents.status-2_b") == "agents.status-2_b"
    for bad in ("agents/status", "a..b", ".a", "a b", "agents.*", "x" * 201, ""):
        with pytest.raises(click.ClickException, match="is not a topic name"):
            hive_cli.check_topic(bad)


def test_batches_are_split_by_count_and_size_in_order():
    messages = [{"json": i} for i in range(2500)]
    chunks = hive_cli.chunk_messages(messages)
    assert [len(chunk) for chunk in chunks] == [1000, 1000, 500]
    assert [m for chunk in chunks for m in chunk] == messages
    big = [{"text": "x" * 40}, {"text": "y" * 40}, {"text": "z" * 200}, {"text": "w"}]
    assert [len(chunk) for chunk in hive_cli.chunk_messages(big, max_bytes=120)] == [2, 1, 1]  # too big goes alone
    assert hive_cli.chunk_messages([]) == []


def test_retention_reads_as_people_say_it():
    assert hive_cli.format_retention(None, None) == "forever"
    assert hive_cli.format_retention(7 * 86400, None) == "1w"
    assert hive_cli.format_retention(3 * 86400, 10_000) == "3d, 10,000 msgs"
    assert hive_cli.format_retention(5400, None) == "90m"
    assert hive_cli.format_retention(61, None) == "61s"


def _message(**fields) -> Message:
    base = {"id": 7, "position": "900-7", "topic": "agents.status", "sender": "bob", "content_type": "json",
            "payload": {"state": "ok"}, "created_at": datetime.now(UTC)}
    return Message.model_validate({**base, **fields})


def test_message_lines_for_people():
    now = datetime.now(UTC)
    line = hive_cli.format_message(_message(), now=now)
    assert re.fullmatch(r'\d\d:\d\d:\d\d #7 agents\.status bob  \{"state":"ok"\}', line)
    old = _message(created_at=now - timedelta(days=400), key="k", content_type="text", payload="two\nlines  here")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d #7 agents\.status bob \[k\]  two lines here",
                        hive_cli.format_message(old, now=now))
    cut = hive_cli.format_message(_message(content_type="text", payload="word " * 100), now=now, width=80)
    assert len(cut) == 79 and cut.endswith("…")
    assert "\x1b[" in hive_cli.format_message(_message(), color=True)
    assert "\x1b[" not in hive_cli.format_message(_message(), color=False)


@pytest.mark.parametrize(("key", "path"), [
    ("plan", "/v1/hive/memory/ns/plan"),
    ("plan/2026/q1", "/v1/hive/memory/ns/plan/2026/q1"),
    ("a b:c", "/v1/hive/memory/ns/a%20b%3Ac"),
    ("x/./y/../z", "/v1/hive/memory/ns/x/%2E/y/%2E%2E/z"),  # names, not directories
    ("100%", "/v1/hive/memory/ns/100%25"),
])
def test_memory_keys_are_quoted_segment_by_segment(key, path):
    assert hive_cli.memory_path("ns", key) == path
    request = httpx.Client(base_url="http://hive.test").build_request("GET", path)
    assert request.url.raw_path.decode() == path  # httpx sends it as it is


def test_memory_names_that_cannot_be_addressed_are_refused():
    assert hive_cli.memory_path("ns") == "/v1/hive/memory/ns"
    with pytest.raises(click.ClickException, match="without '/'"):
        hive_cli.memory_path("a/b", "c")
    for bad in ("", "a//b", "/a", "a/"):
        with pytest.raises(click.ClickException, match="must not be empty"):
            hive_cli.memory_path("ns", bad)


def test_the_stale_memory_message_says_what_to_do():
    assert hive_cli.stale_memory_message("ns", "k", 1, 3) == (
        "ns/k is at version 3, not 1: someone changed it; look with `alai hive mem get ns k` and run again with "
        "--if-version 3")
    assert "drop --if-version to create it" in hive_cli.stale_memory_message("ns", "k", 1, None)


# -- against a fake server -------------------------------------------------------------------------------


def _invoke(monkeypatch, handler, *args: str, input: str | None = None):
    monkeypatch.setattr(http, "Client", functools.partial(http.Client, transport=httpx.MockTransport(handler)))
    return CliRunner().invoke(root, ["hive", *args], env=ENV, input=input)


def _event(message_id: int, topic: str = "agents.a") -> str:
    data = _message(id=message_id, position=f"90{message_id}-{message_id}", topic=topic).model_dump_json()
    return f"id: 90{message_id}-{message_id}\nevent: message\ndata: {data}\n\n"


def _stream(*chunks: str) -> httpx.Response:
    return httpx.Response(200, content="".join(chunks).encode(), headers={"Content-Type": "text/event-stream"})


def test_sub_resumes_where_an_overflow_says_without_loss_or_repeat(monkeypatch):
    seen: list[tuple[str | None, str]] = []
    answers = iter([
        _stream(": subscribed\nid: 900-0\n\n", _event(1), _event(2),
                'event: overflow\ndata: {"resume_from": "902-2"}\n\n'),
        _stream(": subscribed\nid: 902-2\n\n", _event(3)),
    ])

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/hive/subscribe" and request.url.params["topic"] == "agents.*"
        seen.append((request.headers.get("Last-Event-ID"), request.url.params["from"]))
        return next(answers)

    result = _invoke(monkeypatch, handler, "sub", "agents.*", "--json", "--count", "3")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1, 2, 3]
    assert seen == [(None, "now"), ("902-2", "now")]
    assert "fell too far behind; resuming after 902-2" in result.stderr
    assert "connection lost" not in result.stderr  # the overflow said it all


def test_sub_with_timeout_and_count_fails_when_too_few_came(monkeypatch):
    def slow_body():
        yield (": subscribed\nid: 900-0\n\n" + _event(1)).encode()
        time.sleep(30)  # nothing more for a long time; --timeout must cut in

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["from"] == "5"
        return httpx.Response(200, content=slow_body(), headers={"Content-Type": "text/event-stream"})

    started = time.monotonic()
    result = _invoke(monkeypatch, handler, "sub", "agents.a", "--from", "5", "--count", "2", "--timeout", "0.3")
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 1 and "#1 agents.a bob" in result.stdout
    assert result.stderr.splitlines()[-1] == "Error: only 1 of 2 messages within 0.3 s"


def test_pub_retries_a_lost_answer_once_with_the_same_key(monkeypatch):
    monkeypatch.setattr(hive_cli.time, "sleep", lambda seconds: None)
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["Idempotency-Key"])
        assert json.loads(request.content) == {"json": {"a": 1}, "key": "k", "headers": {"h": "v"}}
        if len(keys) == 1:
            raise httpx.ReadError("connection reset by peer")  # stored, maybe; the answer is lost
        return httpx.Response(201, json={"topic": "agents.a", "ids": [12], "positions": ["9-12"]})

    result = _invoke(monkeypatch, handler, "pub", "agents.a", '{"a": 1}', "--key", "k", "-H", "h=v")
    assert result.exit_code == 0, result.output
    assert result.stdout == "12\n"
    assert len(keys) == 2 and keys[0] == keys[1] and len(keys[0]) == 36


def test_pub_does_not_retry_a_refusal(monkeypatch):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(403, json={"title": "Forbidden", "status": 403, "detail": "needs scope hive:write"})

    result = _invoke(monkeypatch, handler, "pub", "agents.a", "x")
    assert result.exit_code == 1 and len(calls) == 1
    assert result.stderr == "Error: needs scope hive:write (HTTP 403)\n"


def test_a_batch_goes_in_requests_of_1000_each_with_its_own_key(monkeypatch):
    requests: list[tuple[str, list]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/hive/topics/agents.a/batch"
        messages = json.loads(request.content)["messages"]
        requests.append((request.headers["Idempotency-Key"], messages))
        first = sum(len(batch) for _, batch in requests[:-1]) + 1
        return httpx.Response(201, json={"topic": "agents.a", "ids": list(range(first, first + len(messages))),
                                         "positions": [f"1-{i}" for i in range(first, first + len(messages))]})

    lines = "".join(f'{{"i": {i}}}\n' for i in range(2500))
    result = _invoke(monkeypatch, handler, "pub", "agents.a", "--batch", "--idempotency-key", "run-1", input=lines)
    assert result.exit_code == 0, result.output
    assert [key for key, _ in requests] == ["run-1", "run-1/2", "run-1/3"]
    assert [len(batch) for _, batch in requests] == [1000, 1000, 500]
    assert [m["json"]["i"] for _, batch in requests for m in batch] == list(range(2500))
    assert result.stdout.split() == [str(i) for i in range(1, 2501)]


def test_a_batch_that_fails_half_way_says_what_was_stored(monkeypatch):
    monkeypatch.setattr(hive_cli.time, "sleep", lambda seconds: None)
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(201, json={"topic": "agents.a", "ids": list(range(1, 1001)),
                                             "positions": ["1-1"] * 1000})
        return httpx.Response(503, json={"title": "Service unavailable", "status": 503, "detail": "draining"})

    result = _invoke(monkeypatch, handler, "pub", "agents.a", "--batch", input="1\n" * 1500)
    assert result.exit_code == 1
    assert len(calls) == 3  # the second request was tried twice: a 503 is worth one retry
    assert result.stderr == ("Error: the first 1000 of 1500 messages were published (up to #1000), the rest not: "
                             "draining (HTTP 503)\n")


def test_mem_set_turns_a_stale_version_into_what_to_do(monkeypatch):
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.method == "PUT" and request.url.raw_path == b"/v1/hive/memory/ns/notes/a%20b"
        assert request.headers["If-Match"] == '"1"' and json.loads(request.content) == {"value": "plain words"}
        return httpx.Response(412, json={"title": "Precondition failed", "status": 412, "current_version": 4,
                                         "detail": "ns/notes/a b is at version 4, not 1; read it again"})

    result = _invoke(monkeypatch, handler, "mem", "set", "ns", "notes/a b", "plain words", "--if-version", "1")
    assert result.exit_code == 1
    assert result.stderr == ("Error: ns/notes/a b is at version 4, not 1: someone changed it; look with "
                             "`alai hive mem get ns notes/a b` and run again with --if-version 4\n")


def test_the_deadline_puts_back_a_timer_that_was_running():
    from alai.cli import hive_sub

    rang = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: rang.append(signum))
    outer = signal.setitimer(signal.ITIMER_REAL, 5.0)  # pytest-timeout's, if it runs one
    try:
        with pytest.raises(hive_sub.TimeUp), hive_sub.deadline(0.05):
            time.sleep(2)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 4.0 < left <= 5.0 and rang == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, *outer)
        signal.signal(signal.SIGALRM, previous)
