"""`alai agent` and `alai nodes`: pure helpers, and the commands against a fake transport — a run
followed to its end across a dropped connection, Ctrl-C cancelling it, the create retry with one
Idempotency-Key, logs paged then followed, put reporting created/updated/unchanged."""

import functools
import json
import re
from datetime import UTC, datetime, timedelta

import click
import httpx
import pytest
from click.testing import CliRunner

from alai.cli import agent as agent_cli
from alai.cli import hive as hive_cli
from alai.cli.main import root
from alai.client import http, sse
from alai.wire.runs import RunEvent

ENV = {"ALAI_SERVER": "http://runs.test", "ALAI_TOKEN": "t"}
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("2m 5s", 125), ("1.5h", 5400), ("600", 600),
    ("45 sec", 45), ("3 min", 180), ("1d", 86400), (" 7S ", 7),
])
def test_durations_read_as_people_write_them(text, seconds):
    assert agent_cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10x", "1h30", "m", "10ms", "-5m", "1h-"])
def test_what_is_not_a_duration_is_refused_with_examples(text):
    with pytest.raises(ValueError, match="use 90s, 10m, 1h, 1h30m or seconds"):
        agent_cli.parse_duration(text)


def test_durations_outside_the_apis_bounds_are_refused_here():
    assert agent_cli.parse_duration("24h") == 86400
    for text in ("0s", "0.4s", "25h", "2d"):
        with pytest.raises(ValueError, match="out of range: a timeout is 1 s to 24 h"):
            agent_cli.parse_duration(text)


def test_durations_are_shown_short():
    assert agent_cli.format_seconds(3600) == "1h"
    assert agent_cli.format_seconds(3725) == "1h2m5s"
    assert agent_cli.format_seconds(600) == "10m"
    assert agent_cli.format_seconds(42) == "42s"
    assert agent_cli.format_seconds(4.3) == "4.3s"


@pytest.mark.parametrize(("text", "run_id"), [("42", 42), ("#42", 42), ("run-42", 42), ("RUN42", 42), (" 7 ", 7),
                                              ("MC-42", None), ("4x", None), ("", None)])
def test_run_ids(text, run_id):
    assert agent_cli.parse_run_id(text) == run_id


def _event(event_id: int, kind: str, data: dict, attempt: int = 1, at: datetime = NOW) -> RunEvent:
    return RunEvent(id=event_id, position=f"100-{event_id}", run_id=7, attempt=attempt, kind=kind, data=data, at=at)


def test_state_changes_say_where_and_why():
    assert agent_cli.describe_state({"state": "queued"}) == "queued"
    assert agent_cli.describe_state({"state": "waiting", "reason": "no online node has model:alaiml-task"}) == (
        "waiting: no online node has model:alaiml-task")
    assert agent_cli.describe_state({"state": "running", "node": "anvil"}, attempt=2) == (
        "running on anvil (attempt 2)")
    assert agent_cli.describe_state({"state": "running", "node": "forge", "attempt": 3, "max_attempts": 3}) == (
        "running on forge (attempt 3 of 3)")
    assert agent_cli.describe_state({"state": "running", "node": "x", "cancel_requested": True}, 1) == (
        "running on x (attempt 1), cancel requested")
    assert agent_cli.describe_state({"state": "running", "node": "x", "attempt": 1, "reason": None,
                                     "cancel_requested": True, "by": "alice"}) == (
        "running on x (attempt 1), cancel requested by alice")
    assert agent_cli.describe_state({"state": "timed_out", "error": "took\ntoo long"}) == "timed out: took too long"
    assert agent_cli.describe_state({"state": "cancelled", "reason": "cancelled"}) == "cancelled"


def test_events_read_on_one_line():
    assert agent_cli.describe_event(_event(1, "state", {"state": "running", "node": "anvil"}, 2)) == (
        "running on anvil (attempt 2)")
    assert agent_cli.describe_event(_event(2, "tool_call", {"name": "grep", "arguments": {"q": "x"}})) == (
        'grep({"q":"x"})')
    assert agent_cli.describe_event(_event(3, "usage", {"prompt_tokens": 1200, "model": "m"})) == (
        "prompt_tokens 1,200, model m")
    assert agent_cli.describe_event(_event(4, "log", {"text": "cloning\nrepo"})) == "cloning repo"
    assert agent_cli.describe_event(_event(5, "log", {"code": 3})) == '{"code":3}'
    assert agent_cli.describe_event(_event(6, "outcome", {"outcome": "failed", "error": "boom"})) == "failed: boom"
    assert agent_cli.describe_event(_event(7, "output", {"text": "a\nb"})) == "a b"


def test_only_a_final_state_event_ends_a_run():
    assert agent_cli.is_final(_event(1, "state", {"state": "succeeded"}))
    assert agent_cli.is_final(_event(1, "state", {"state": "timed_out"}))
    assert not agent_cli.is_final(_event(1, "state", {"state": "running"}))
    assert not agent_cli.is_final(_event(1, "outcome", {"state": "succeeded", "outcome": "succeeded"}))


def test_failure_messages_are_one_line_with_the_reason():
    assert agent_cli.failure_message(7, "failed", "model 'x' not found\nat line 2") == (
        "run 7 failed: model 'x' not found at line 2")
    assert agent_cli.failure_message(7, "timed_out", None, 600) == "run 7 timed out after 10m"
    assert agent_cli.failure_message(7, "timed_out", "timed out after 600 s on anvil", 600) == (
        "run 7 timed out after 600 s on anvil")  # the server's words, not said twice
    assert agent_cli.failure_message(7, "timed_out", "deadline passed", 90) == (
        "run 7 timed out after 1m30s: deadline passed")
    assert agent_cli.failure_message(7, "cancelled", "cancelled by alice") == "run 7 was cancelled by alice"
    assert agent_cli.failure_message(7, "cancelled", None) == "run 7 was cancelled"


def test_the_name_comes_from_the_front_matter():
    assert agent_cli.front_matter_name("---\nname: reviewer\nmodel: x\n---\nYou review.") == "reviewer"
    assert agent_cli.front_matter_name("\ufeff---\ndescription: d\nname: \"quoted-1\"  # c\n---\n") == "quoted-1"
    assert agent_cli.front_matter_name("---\ntools:\n  name: nested\n---\nname: body\n") is None
    assert agent_cli.front_matter_name("No front matter.\nname: x\n") is None
    assert agent_cli.front_matter_name("---\nname:\n---\n") is None


def test_times_are_relative_within_a_day_else_local():
    assert agent_cli.relative_time(NOW - timedelta(seconds=12), NOW) == "12s ago"
    assert agent_cli.relative_time(NOW - timedelta(minutes=5, seconds=59), NOW) == "5m ago"
    assert agent_cli.relative_time(NOW - timedelta(hours=3), NOW) == "3h ago"
    assert agent_cli.relative_time(NOW + timedelta(seconds=2), NOW) == "just now"  # clocks differ a little
    old = NOW - timedelta(days=3)
    assert agent_cli.relative_time(old, NOW) == old.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def test_bad_options_are_usage_errors_before_anything_is_sent(monkeypatch):
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"nothing should be sent: {request.url}")

    for args, message in ((["run", "a", "x", "--timeout", "soon"], "is not a duration"),
                          (["run", "a", "x", "--task", "nope"], "is not a task id"),
                          (["run", "a", "x", "--max-attempts", "11"], "11 is not in the range 1<=x<=10"),
                          (["status", "MC-1"], "is not a run id"),
                          (["runs", "--state", "done"], "unknown state 'done'; use one of: queued, waiting,"),
                          (["show", "no/slash"], "is not an agent name")):
        result = _invoke(monkeypatch, handler, *args)
        assert result.exit_code == (1 if args[0] == "show" else 2), result.output
        assert message in result.stderr


# -- against a fake server -------------------------------------------------------------------------------


def _invoke(monkeypatch, handler, *args: str, input: str | None = None, command: str = "agent"):
    monkeypatch.setattr(http, "Client", functools.partial(http.Client, transport=httpx.MockTransport(handler)))
    monkeypatch.setattr(sse.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(hive_cli.time, "sleep", lambda seconds: None)
    return CliRunner().invoke(root, [command, *args], env=ENV, input=input)


def _run(run_id: int = 7, state: str = "queued", **fields) -> dict:
    return {"id": run_id, "agent": "coder", "agent_version": 3, "model": "qwen3.5:27b", "executor": "llm",
            "requires": ["model:qwen3.5:27b"], "state": state, "priority": 0, "timeout_seconds": 600,
            "max_attempts": 3, "attempt": 0, "created_by": "me", "created_at": NOW.isoformat(),
            "updated_at": NOW.isoformat(), **fields}


def _frame(event_id: int, kind: str, data: dict, attempt: int = 1) -> str:
    event = _event(event_id, kind, data, attempt, at=NOW + timedelta(seconds=event_id))
    return f"id: {event.position}\nevent: {kind}\ndata: {event.model_dump_json()}\n\n"


def _stream(*frames: str) -> httpx.Response:
    return httpx.Response(200, content="".join(frames).encode(), headers={"Content-Type": "text/event-stream"})


def test_run_streams_output_to_stdout_and_states_to_stderr_across_a_drop(monkeypatch):
    created, resumed_with = [], []
    streams = iter([
        _stream(": hello\n\n", _frame(1, "state", {"state": "queued"}),
                _frame(2, "state", {"state": "waiting", "reason": "no online node has model:qwen3.5:27b"}),
                _frame(3, "state", {"state": "running", "node": "anvil"}), _frame(4, "output", {"text": "Hel"})),
        # The connection broke off; the server resumes after 100-4 (and repeats 4, which must not print twice).
        _stream(_frame(4, "output", {"text": "Hel"}), _frame(5, "output", {"text": "lo,\nworld"}),
                _frame(6, "usage", {"completion_tokens": 3}), _frame(7, "state", {"state": "succeeded"}),
                _frame(8, "log", {"text": "never read: the run had ended"})),
    ])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert request.url.path == "/v1/runs"
            created.append((request.headers["Idempotency-Key"], json.loads(request.content)))
            if len(created) == 1:
                raise httpx.ReadError("connection reset by peer")  # stored, maybe; the answer is lost
            return httpx.Response(201, json=_run())
        if request.url.path == "/v1/runs/7":
            return httpx.Response(200, json=_run(state="running"))  # the probe before each connection
        assert request.url.path == "/v1/runs/7/stream"
        resumed_with.append(request.headers.get("Last-Event-ID"))
        return next(streams)

    result = _invoke(monkeypatch, handler, "run", "coder", "-", "--task", "12", "--timeout", "10m", "--priority",
                     "5", input="say hello\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Hello,\nworld"  # as the model wrote it: nothing added, nothing twice
    assert len(created) == 2 and created[0][0] == created[1][0]  # the retry carries the same key
    assert created[0][1] == {"agent": "coder", "input": "say hello\n", "task_id": "MC-12", "timeout_seconds": 600,
                             "priority": 5}
    assert resumed_with == [None, "100-4"]
    lines = result.stderr.splitlines()
    assert lines[0] == "run 7: coder v3, model qwen3.5:27b (Ctrl-C cancels it)"
    assert lines[1:4] == ["queued", "waiting: no online node has model:qwen3.5:27b", "running on anvil (attempt 1)"]
    assert lines[4].startswith("connection lost (") and "reconnecting in" in lines[4]
    assert lines[5:] == ["usage: completion_tokens 3", "succeeded in 6s"]
    assert "\x1b[" not in result.output


def test_a_failed_run_exits_1_with_its_reason_on_one_line(monkeypatch):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(201, json=_run())
        if request.url.path == "/v1/runs/7":
            return httpx.Response(200, json=_run(state="failed", reason="model 'x' not found"))
        return _stream(_frame(1, "state", {"state": "running", "node": "anvil"}), _frame(2, "output", {"text": "pa"}),
                       _frame(3, "state", {"state": "failed"}))

    result = _invoke(monkeypatch, handler, "run", "coder", "go")
    assert result.exit_code == 1
    assert result.stdout == "pa"
    assert result.stderr.splitlines()[-1] == "Error: run 7 failed: model 'x' not found"
    assert "failed" not in result.stderr.splitlines()[-2]  # said once, by the error line


def test_ctrl_c_while_following_cancels_the_run_and_exits_130(monkeypatch):
    cancelled = []

    def interrupted_body():
        yield _frame(1, "state", {"state": "running", "node": "anvil"}).encode()
        yield _frame(2, "output", {"text": "partial"}).encode()
        raise KeyboardInterrupt

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/runs":
            return httpx.Response(201, json=_run())
        if request.method == "POST":
            cancelled.append(request.url.path)
            return httpx.Response(200, json=_run(state="running", node="anvil", cancel_requested=True))
        if request.url.path == "/v1/runs/7":
            return httpx.Response(200, json=_run(state="running"))
        return httpx.Response(200, content=interrupted_body(), headers={"Content-Type": "text/event-stream"})

    result = _invoke(monkeypatch, handler, "run", "coder", "go")
    assert result.exit_code == 130
    assert cancelled == ["/v1/runs/7/cancel"]
    assert result.stdout == "partial"
    assert result.stderr.splitlines()[-1] == "run 7: cancel requested; it stops on anvil shortly"


def test_detach_prints_the_id_and_json_prints_events_as_lines(monkeypatch):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert json.loads(request.content) == {"agent": "coder", "input": "", "model": "m2", "max_attempts": 2}
            return httpx.Response(201, json=_run(model="m2"))
        if request.url.path == "/v1/runs/7":
            return httpx.Response(200, json=_run())
        return _stream(_frame(1, "state", {"state": "queued"}), _frame(2, "output", {"text": "x"}),
                       _frame(3, "state", {"state": "succeeded"}))

    detached = _invoke(monkeypatch, handler, "run", "coder", "--model", "m2", "--max-attempts", "2", "--detach")
    assert detached.exit_code == 0, detached.output
    assert detached.stdout == "7\n"  # piped: the id alone, for scripts
    followed = _invoke(monkeypatch, handler, "run", "coder", "--model", "m2", "--max-attempts", "2", "--json")
    assert followed.exit_code == 0, followed.output
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    assert [(event["id"], event["kind"]) for event in events] == [(1, "state"), (2, "output"), (3, "state")]
    assert followed.stderr == ""


def test_logs_reads_the_pages_then_follows_from_the_last_position(monkeypatch):
    pages = {None: {"items": [json.loads(_event(1, "state", {"state": "queued"}).model_dump_json()),
                              json.loads(_event(2, "output", {"text": "one "}).model_dump_json())],
                    "next_after": "100-2"},
             "100-2": {"items": [json.loads(_event(3, "output", {"text": "two"}).model_dump_json())],
                       "next_after": "100-3"},
             "100-3": {"items": [], "next_after": None}}
    streamed_from = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/runs/7/events":
            return httpx.Response(200, json=pages[request.url.params.get("after")])
        if request.url.path == "/v1/runs/7":
            return httpx.Response(200, json=_run(state="running"))
        streamed_from.append(request.headers.get("Last-Event-ID"))
        return _stream(_frame(4, "output", {"text": " three\n"}), _frame(5, "state", {"state": "succeeded"}))

    result = _invoke(monkeypatch, handler, "logs", "7", "-f")
    assert result.exit_code == 0, result.output
    assert streamed_from == ["100-3"]
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d state     queued", lines[0])
    assert lines[1] == "one two three"
    assert lines[2].endswith("state     succeeded") and len(lines) == 3

    as_json = _invoke(monkeypatch, handler, "logs", "7", "--json")  # no -f: the stored events only
    assert [json.loads(line)["id"] for line in as_json.stdout.splitlines()] == [1, 2, 3]


def test_put_says_created_updated_or_unchanged(monkeypatch, tmp_path):
    versions = {"reviewer": 2, "scout": 5}
    puts = []

    def handler(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[1]
        if request.method == "GET":
            if name not in versions:
                return httpx.Response(404, json={"title": "Not found", "status": 404, "detail": "no such agent"})
            return httpx.Response(200, json=_agent(name, versions[name]))
        definition = json.loads(request.content)["definition"]
        puts.append((name, definition))
        if "same" not in definition:
            versions[name] = versions.get(name, 0) + 1
        return httpx.Response(200, json=_agent(name, versions[name]))

    (tmp_path / "reviewer.md").write_text("---\ndescription: reviews\n---\nYou review.\n")
    (tmp_path / "other.md").write_text("---\nname: scout\n---\nsame prompt\n")
    (tmp_path / "notes.txt").write_text("not an agent")
    new = tmp_path / "elsewhere" / "new.md"
    new.parent.mkdir()
    new.write_text("You are new.\n")
    result = _invoke(monkeypatch, handler, "put", str(tmp_path), str(new), str(tmp_path / "reviewer.md"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["unchanged scout v5", "updated   reviewer v2 → v3", "created   new v1"]
    assert [name for name, _ in puts] == ["scout", "reviewer", "new"]
    assert puts[2][1] == "You are new.\n"  # the file as written


def _agent(name: str, version: int) -> dict:
    return {"name": name, "version": version, "system_prompt": "p", "definition": "d", "updated_at": NOW.isoformat(),
            "updated_by": "me"}


def test_put_goes_on_after_a_refused_file_and_exits_1(monkeypatch, tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(404, json={"title": "Not found", "status": 404})
        if "bad" in request.url.path:
            return httpx.Response(422, json={"title": "Invalid", "status": 422, "detail": "front matter: bad YAML"})
        return httpx.Response(200, json=_agent("good", 1))

    (tmp_path / "bad.md").write_text("---\nname: bad\ntools: [\n---\n")
    (tmp_path / "good.md").write_text("prompt")
    (tmp_path / "bad name.md").write_text("prompt")
    result = _invoke(monkeypatch, handler, "put", str(tmp_path))
    assert result.exit_code == 1
    assert result.stdout == "created   good v1\n"
    errors = result.stderr.splitlines()
    assert errors[0].endswith("bad name.md: 'bad name' is not an agent name: 1-64 letters, digits, _ and -, "
                              "starting with a letter or digit")
    assert errors[1].endswith("bad.md: front matter: bad YAML (HTTP 422)")
    assert errors[2] == "Error: 2 of 3 definitions were refused"


def test_result_prints_the_output_alone_and_fails_when_the_run_did(monkeypatch):
    answers = {"state": "succeeded", "output": "42\n"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/runs/7/result":
            return httpx.Response(200, json={"id": 7, "attempt": 1, **answers})
        return httpx.Response(200, json=_run(state=answers["state"]))

    ok = _invoke(monkeypatch, handler, "result", "7")
    assert (ok.exit_code, ok.stdout, ok.stderr) == (0, "42\n", "")
    answers.update(state="timed_out", output="half", error=None)
    late = _invoke(monkeypatch, handler, "result", "#7")
    assert (late.exit_code, late.stdout, late.stderr) == (1, "half", "Error: run 7 timed out after 10m\n")


def test_runs_and_nodes_are_tables(monkeypatch):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(list(request.url.params.multi_items()))
        if request.url.path == "/v1/nodes":
            return httpx.Response(200, json=[
                {"name": "anvil", "kind": "node", "principal": "svc-anvil", "capabilities": [],
                 "models": ["qwen3.5:27b", "alaiml-task"], "max_concurrency": 4, "online": True,
                 "last_heartbeat_at": (datetime.now(UTC) - timedelta(seconds=3)).isoformat(),
                 "registered_at": NOW.isoformat(), "running": [7, 9]},
                {"name": "forge", "kind": "node", "principal": "svc-forge", "capabilities": [], "models": [],
                 "max_concurrency": 1, "online": False, "last_heartbeat_at": "2025-01-02T03:04:05+00:00",
                 "registered_at": NOW.isoformat()}])
        return httpx.Response(200, json={"items": [_run(state="waiting", reason="no online node has model:x"),
                                                   _run(9, state="running", node="anvil", attempt=2)],
                                         "next_cursor": None})

    runs = _invoke(monkeypatch, handler, "runs", "--state", "waiting,Running", "-s", "timed-out", "--agent", "coder",
                   "--task", "mc-4")
    assert runs.exit_code == 0, runs.output
    assert seen[-1] == [("agent", "coder"), ("task_id", "MC-4"), ("state", "waiting"), ("state", "running"),
                        ("state", "timed_out"), ("limit", "20")]
    lines = runs.stdout.splitlines()
    assert lines[0].split() == ["ID", "AGENT", "STATE", "NODE", "ATTEMPT", "CREATED", "REASON"]
    assert lines[1].split()[:5] == ["7", "coder", "waiting", "-", "0/3"]
    assert lines[1].endswith("no online node has model:x")
    assert lines[2].split()[:5] == ["9", "coder", "running", "anvil", "2/3"]

    table = _invoke(monkeypatch, handler, command="nodes")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "ONLINE", "HEARTBEAT", "RUNNING", "MODELS"]
    assert re.match(r"anvil\s+node\s+yes\s+\d+s ago\s+7, 9 \(2/4\)\s+qwen3\.5:27b, alaiml-task$", lines[1])
    assert re.match(r"forge\s+node\s+no\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+-\s+-$", lines[2])


def test_refusals_are_one_line(monkeypatch):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"title": "Not found", "status": 404, "detail": "unknown agent 'ghost'"})

    result = _invoke(monkeypatch, handler, "run", "ghost", "hi")
    assert result.exit_code == 1
    assert result.stderr == "Error: unknown agent 'ghost' (HTTP 404)\n"


def test_the_input_size_is_checked_before_sending(monkeypatch):
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing should be sent")

    result = _invoke(monkeypatch, handler, "run", "coder", "-", input="x" * (1024 * 1024 + 1))
    assert result.exit_code == 1
    assert result.stderr == "Error: the input is too large: 1,048,577 bytes; at most 1,048,576 (1 MiB) are allowed\n"


def test_a_duration_param_accepts_ints_from_defaults():
    assert agent_cli.DurationParam().convert(30, None, None) == 30
    with pytest.raises(click.BadParameter):
        agent_cli.DurationParam().convert("forever", None, None)
