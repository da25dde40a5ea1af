"""`alai mc` pure helpers, `Client.stream` and the SSE follower against a fake transport, and the If-Match
retry rules."""

import functools
import json
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from click.testing import CliRunner

from alai.cli import mc, mc_watch
from alai.cli.main import root
from alai.client import http, sse
from alai.client.profiles import Profile


@pytest.mark.parametrize(("typed", "expected"), [
    ("123", "MC-123"), ("mc-123", "MC-123"), ("MC-123", "MC-123"), ("mc123", "MC-123"), (" 7 ", "MC-7"),
    ("007", "MC-7"), ("abc", None), ("MC-", None), ("12a", None), ("", None),
])
def test_task_ids_are_normalised(typed, expected):
    assert mc.normalize_task_id(typed) == expected


def test_since_takes_ages_and_iso_dates():
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    assert mc.parse_since("2h", now) == now - timedelta(hours=2)
    assert mc.parse_since("30m", now) == now - timedelta(minutes=30)
    assert mc.parse_since("3d", now) == now - timedelta(days=3)
    assert mc.parse_since("1W", now) == now - timedelta(weeks=1)
    assert mc.parse_since("2026-03-01T08:00:00+02:00") == datetime(2026, 3, 1, 6, 0, tzinfo=UTC)
    # No offset: the user's local time.
    local_midnight = datetime(2026, 3, 1).astimezone()
    assert mc.parse_since("2026-03-01") == local_midnight.astimezone(UTC)
    with pytest.raises(ValueError, match="neither an age"):
        mc.parse_since("yesterday")


def test_statuses_match_loosely_but_only_the_workflows():
    statuses = ["todo", "in_progress", "done"]
    assert mc.match_status("in_progress", statuses) == "in_progress"
    assert mc.match_status("In-Progress", statuses) == "in_progress"
    assert mc.match_status("doing", statuses) is None


def test_the_stale_message_says_what_happened_and_what_to_do():
    assert mc.stale_message("MC-12", 5) == "MC-12 changed since you read it (now version 5); run the command again"
    assert "\n" not in mc.stale_message("MC-12", None)


def test_short_times_are_local_and_short():
    now = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    assert mc.short_time(now - timedelta(minutes=5), now) == (now - timedelta(minutes=5)).astimezone().strftime("%H:%M")
    assert mc.short_time(datetime(2026, 1, 2, 12, tzinfo=UTC), now).count(" ") == 1
    assert mc.short_time(datetime(2024, 1, 2, 12, tzinfo=UTC), now) == "2024-01-02"


def test_changes_are_summarised_on_one_line():
    text = mc_watch.summarize_changes({"status": ["todo", "done"], "assignee": [None, "bob"],
                                 "description": ["a", "b\nc"], "labels": [[], ["x", "y"]]})
    assert text == "status: todo → done; assignee: - → bob; description changed; labels: [] → x, y"
    assert mc.one_line("x" * 100, 10) == "x" * 9 + "…"
    assert mc.one_line("a\n b") == "a b"


def test_sse_parsing_follows_the_whatwg_rules():
    lines = [": connected", "", "id: 5-1", "event: created", "data: {\"a\":", "data: 1}", "",
             ": keepalive", "", "event: updated", "data:x", "", "id: 9-2", "", "retry: 100", ""]
    messages = list(sse.parse_sse(lines))
    assert messages == [
        sse.SseMessage(id="5-1", event="created", data='{"a":\n1}'),
        sse.SseMessage(id="5-1", event="updated", data="x"),  # the id carries over
        sse.SseMessage(id="9-2", event="message", data=None),  # an id alone moves the resume point
    ]


# -- the follower, against a fake stream ---------------------------------------------------------------


def _event(position: str, kind: str = "created", task_id: str = "MC-1") -> str:
    event_id = position.split("-")[1]
    return json.dumps({"id": int(event_id), "position": position, "kind": kind, "task_id": task_id,
                       "actor": "bob", "at": "2026-01-01T00:00:00Z"})


def _sse(*events: str) -> bytes:
    chunks = [": connected\n\n"]
    for data in events:
        chunks.append(f"id: {json.loads(data)['position']}\nevent: {json.loads(data)['kind']}\ndata: {data}\n\n")
    return "".join(chunks).encode()


def _client(handler) -> http.Client:
    profile = Profile(name="default", server="http://mc.test", token="t", timeout=5.0, sources={})
    return http.Client(profile, transport=httpx.MockTransport(handler))


def _follow(client: http.Client, **kwargs):
    """The follower as `alai mc watch` runs it."""
    return sse.follow(client, mc_watch.EVENTS_STREAM_PATH, probe_path=mc_watch.PROBE_PATH,
                      read_timeout=mc_watch.STREAM_READ_TIMEOUT, **kwargs)


def test_a_stream_answered_with_a_problem_raises_api_error():
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept"] == "text/event-stream"
        return httpx.Response(404, json={"title": "Not found", "status": 404, "detail": "no such stream"})

    with _client(handler) as client, pytest.raises(http.ApiError, match="no such stream") as raised:
        with client.stream("GET", "/v1/nowhere", headers={"Accept": "text/event-stream"}):
            pytest.fail("the block must not run for a 4xx")
    assert raised.value.status == 404


def test_a_stream_to_a_closed_port_raises_server_unreachable():
    profile = Profile(name="default", server="http://127.0.0.1:9", token="t", timeout=5.0, sources={})
    with http.Client(profile) as client, pytest.raises(http.ServerUnreachable, match="cannot reach http://127.0.0.1:9"):
        with client.stream("GET", "/v1/mc/events/stream", read_timeout=1.0):
            pytest.fail("there is no server")


def test_a_stream_that_breaks_off_raises_server_unreachable_with_the_reason():
    def broken_body():
        yield b"data: one\n\n"
        raise httpx.ReadError("connection reset by peer")

    with _client(lambda request: httpx.Response(200, content=broken_body())) as client:
        lines: list[str] = []
        with pytest.raises(http.ServerUnreachable, match="^connection reset by peer$"):
            with client.stream("GET", "/stream") as response:
                lines.extend(response.iter_lines())
    assert lines == ["data: one", ""]


def test_the_follower_resumes_from_the_last_position_after_a_drop():
    seen_resume: list[str | None] = []
    streams = iter([
        httpx.Response(200, content=_sse(_event("7-1"), _event("7-2", "updated")),
                       headers={"Content-Type": "text/event-stream"}),
        httpx.Response(503, json={"title": "Service unavailable", "status": 503, "detail": "restarting"}),
        httpx.Response(200, content=_sse(_event("8-3", "commented")), headers={"Content-Type": "text/event-stream"}),
    ])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/mc/statuses":
            return httpx.Response(200, json={"statuses": ["todo"], "closed": []})
        assert request.url.params["assignee"] == "bob"
        seen_resume.append(request.headers.get("Last-Event-ID"))
        return next(streams)

    delays: list[float] = []
    retries: list[str] = []
    with _client(handler) as client:
        events = _follow(client, params={"assignee": "bob"}, last_id=None, sleep=delays.append,
                         on_retry=lambda reason, delay: retries.append(reason))
        got = [next(events) for _ in range(3)]
    assert [kind for kind, _ in got] == ["created", "updated", "commented"]
    assert json.loads(got[2][1])["position"] == "8-3"
    assert seen_resume == [None, "7-2", "7-2"]
    # backoff grows while it fails, with ±20 % jitter …
    assert 0.4 <= delays[0] <= 0.6 and 0.8 <= delays[1] <= 1.2
    assert retries[0] == "the server ended the stream" and "restarting" in retries[1]


def test_the_follower_gives_up_at_once_when_the_first_connection_is_refused():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"title": "Authentication required", "status": 401,
                                         "detail": "this token is not valid; run `alai login`"})

    with _client(handler) as client, pytest.raises(http.ApiError, match="alai login"):
        next(_follow(client, params={}, last_id="5", sleep=lambda _: None))


def test_event_lines_for_people():
    line = mc_watch.format_event("updated", json.dumps({
        "id": 3, "position": "9-3", "kind": "updated", "task_id": "MC-4", "actor": "bob",
        "at": datetime.now(UTC).isoformat(), "changes": {"status": ["todo", "review"]}}))
    assert "updated" in line and "MC-4" in line and "bob" in line and "status: todo → review" in line
    assert mc_watch.format_event("deleted", json.dumps({"task_id": "MC-4"})) == "deleted MC-4"


# -- If-Match: move retries once, edit never -------------------------------------------------------------


class FakeTasks:
    """Just enough of /v1/mc for one task whose version moves on behind the CLI's back."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.task = {"id": "MC-3", "title": "t", "status": "todo", "priority": 2, "created_at": "2026-01-01T00:00:00Z",
                     "updated_at": "2026-01-01T00:00:00Z", "created_by": "bob", "version": 1}
        self.patches: list[str] = []
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/mc/statuses":
            return httpx.Response(200, json={"statuses": ["todo", "done"], "closed": ["done"]})
        if request.method == "GET":
            return httpx.Response(200, json=self.task, headers={"ETag": f'"{self.task["version"]}"'})
        self.patches.append(request.headers["If-Match"])
        self.bodies.append(json.loads(request.content))
        if self.conflicts:
            self.conflicts -= 1
            self.task["version"] += 1  # someone else got there first
        if request.headers["If-Match"] != f'"{self.task["version"]}"':
            return httpx.Response(412, json={
                "title": "Precondition failed", "status": 412, "current_version": self.task["version"],
                "detail": f"MC-3 changed since you read it (now version {self.task['version']})"})
        self.task = {**self.task, **json.loads(request.content), "version": self.task["version"] + 1}
        return httpx.Response(200, json=self.task)


def _run(fake: FakeTasks, monkeypatch, *args: str):
    monkeypatch.setattr(http, "Client", functools.partial(http.Client, transport=httpx.MockTransport(fake)))
    return CliRunner().invoke(root, ["mc", *args], env={"ALAI_SERVER": "http://mc.test", "ALAI_TOKEN": "t"})


def test_move_reads_again_once_when_the_task_changed_meanwhile(monkeypatch):
    fake = FakeTasks(conflicts=1)
    result = _run(fake, monkeypatch, "move", "3", "done")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "MC-3 todo → done"
    assert fake.patches == ['"1"', '"2"']


def test_move_gives_up_after_a_second_conflict(monkeypatch):
    fake = FakeTasks(conflicts=2)
    result = _run(fake, monkeypatch, "done", "mc-3")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: MC-3 changed since you read it (now version 3); run the command again"


def test_edit_never_retries(monkeypatch):
    fake = FakeTasks(conflicts=1)
    result = _run(fake, monkeypatch, "edit", "3", "--title", "new", "--due", "2026-02-01")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: MC-3 changed since you read it (now version 2); run the command again"]
    assert fake.patches == ['"1"']


def test_edit_sends_only_the_fields_given_and_nulls_to_clear(monkeypatch):
    fake = FakeTasks(conflicts=0)
    result = _run(fake, monkeypatch, "edit", "3", "--parent", "none", "--due", "2026-02-01", "-l", "x")
    assert result.exit_code == 0, result.output
    assert fake.bodies == [{"parent_id": None, "due_date": date(2026, 2, 1).isoformat(), "labels": ["x"]}]
    assert result.output.strip() == "MC-3 changed labels, due_date"  # parent_id was already empty
