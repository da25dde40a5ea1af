"""`alai mc` end to end: the CLI as a user runs it, against a real `alai serve`.

One server for the module (its start is most of the cost); each test makes its own
tasks in its own project so that the tests do not see each other's.
"""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from alai.server.db.embedded import EmbeddedPostgres
from tests.support.cli import ANSI, ok, on_a_terminal, one_line_error
from tests.support.processes import ALAI, run_cli, start_serve

pytestmark = pytest.mark.e2e

TOKEN = "t"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("mc-cli")
    process = start_serve(env={"ALAI_ADMIN_TOKEN": TOKEN, "ALAI_DATA_DIR": str(base / "data"),
                               "ALAI_CONFIG_DIR": str(base / "config"), "HOME": str(base)},
                          log_path=base / "serve.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
        if (base / "data" / "postgres" / "postmaster.pid").exists():  # it was killed: stop its PostgreSQL
            orphan = EmbeddedPostgres(base / "data")
            orphan.start()
            orphan.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def env(server) -> dict[str, str]:
    return {"ALAI_SERVER": server.url, "ALAI_TOKEN": TOKEN, "COLUMNS": "200"}


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        yield client


@pytest.fixture
def project() -> str:
    return f"p{uuid.uuid4().hex[:8]}"


def mc(env: dict[str, str], *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return run_cli("mc", *args, env=env, input=input)






def test_a_task_from_creation_to_done(env, project):
    first = ok(mc(env, "create", "Fix the login page", "-d", "-", "-a", "bob", "-P", project, "-l", "ui", "-l", "auth",
                  "-p", "1", "--due", "2030-01-31", input="# Steps\n\nIt *fails* on Safari.\n")).strip()
    assert re.fullmatch(r"MC-\d+", first)  # piped: the id alone, for scripts
    second = ok(mc(env, "create", "Write the release notes", "-P", project, "--status", "review")).strip()
    number = first.removeprefix("MC-")

    listed = json.loads(ok(mc(env, "list", "--project", project, "--json")))
    assert [task["id"] for task in listed] == [second, first]  # most recently updated first
    assert listed[1]["labels"] == ["ui", "auth"] and listed[1]["due_date"] == "2030-01-31"
    assert ids(env, "--project", project, "--status", "todo") == [first]
    assert ids(env, "--project", project, "-s", "todo,review", "--sort", "id") == [first, second]
    assert ids(env, "--project", project, "--assignee", "bob") == [first]
    assert ids(env, "--project", project, "--label", "auth") == [first]
    assert ids(env, "--project", project, "-q", "release") == [second]
    assert ids(env, "--project", project, "--since", "1h") == [second, first]
    assert ids(env, "--project", project, "--since", "2000-01-01T00:00:00+00:00") == [second, first]

    table = mc(env, "list", "--project", project)
    lines = ok(table).splitlines()
    assert lines[0].split() == ["ID", "STATUS", "PRI", "ASSIGNEE", "PROJECT", "UPDATED", "TITLE"]
    assert lines[2].split()[:5] == [first, "todo", "1", "bob", project] and lines[2].endswith("Fix the login page")
    paged = mc(env, "list", "--project", project, "--limit", "1")
    assert len(ok(paged).splitlines()) == 2 and "1 shown; more with --all-pages" in paged.stderr
    assert len(json.loads(ok(mc(env, "list", "--project", project, "-n", "1", "--all-pages", "--json")))) == 2

    shown = ok(mc(env, "show", number))  # 123 means MC-123
    assert shown.splitlines()[0] == f"{first}  Fix the login page"
    assert "It *fails* on Safari." in shown  # piped: the markdown as written
    assert re.search(r"labels\s+ui, auth", shown) and re.search(r"due\s+2030-01-31", shown)

    assert ok(mc(env, "move", f"mc-{number}", "in-progress")).strip() == f"{first} todo → in_progress"
    assert ok(mc(env, "assign", number, "alice")).strip() == f"{first} assignee bob → alice"
    assert ok(mc(env, "assign", number, "-")).strip() == f"{first} assignee alice → -"
    assert ok(mc(env, "assign", number, "--none")).strip() == f"{first} is already unassigned"
    assert ok(mc(env, "comment", number, "Reproduced on **16.2**")).startswith(f"{first} commented")
    assert ok(mc(env, "comment", number, input="From stdin,\non two lines\n")).startswith(f"{first} commented")
    edited = ok(mc(env, "edit", number, "--title", "Fix Safari login", "--unlabel", "ui", "--due", "none"))
    assert edited.strip() == f"{first} changed title, labels, due_date"
    assert ok(mc(env, "done", number)).strip() == f"{first} in_progress → done"

    task = json.loads(ok(mc(env, "show", first, "--json")))
    assert task["status"] == "done" and task["closed_at"] and task["assignee"] is None
    assert task["labels"] == ["auth"] and task["due_date"] is None and task["title"] == "Fix Safari login"
    assert [c["body"] for c in task["comments"]] == ["Reproduced on **16.2**", "From stdin,\non two lines"]

    history = json.loads(ok(mc(env, "history", first, "--json")))
    fields = [entry["field"] for entry in history]
    assert fields[:4] == ["created", "status", "assignee", "assignee"] and fields[-1] == "status"
    assert sorted(fields[4:-1]) == ["due_date", "labels", "title"]  # one edit, in no particular order
    assert "status: in_progress → done" in ok(mc(env, "history", first))

    assert ok(mc(env, "archive", second)).strip() == f"{second} archived"
    assert ids(env, "--project", project) == [first]
    assert ids(env, "--project", project, "--archived-only") == [second]
    assert ok(mc(env, "restore", second)).strip() == f"{second} restored"
    assert ids(env, "--project", project, "--sort", "id") == [first, second]


def ids(env: dict[str, str], *filters: str) -> list[str]:
    return [task["id"] for task in json.loads(ok(mc(env, "list", *filters, "--json")))]



def test_colours_on_a_terminal_and_never_with_no_color_or_piped(env, project):
    task_id = ok(mc(env, "create", "Colourful", "-P", project, "--status", "blocked", "-d", "# Title\n\n*x*"))
    task_id = task_id.strip()
    terminal = {**env, "TERM": "xterm-256color"}
    for args in (("list", "--project", project), ("show", task_id)):
        assert ANSI.search(on_a_terminal(terminal, "mc", *args))
        no_color = on_a_terminal({**terminal, "NO_COLOR": "1"}, "mc", *args)
        assert "blocked" in no_color and not ANSI.search(no_color)
        assert "blocked" in ok(mc(terminal, *args))  # piped (ok() checks there is no escape)
    # On a terminal, `create` says more than the id.
    assert "created MC-" in on_a_terminal(env, "mc", "create", "Chatty", "-P", project)


def test_the_mc_commands_never_import_the_server():
    probe = (
        "import json, sys\nfrom click.testing import CliRunner\nfrom alai.cli.main import root\n"
        "for args in (['mc', '--help'], ['mc', 'list'], ['mc', 'show', '1'], ['mc', 'watch'], ['mc', 'move', '1', 'x']):\n"
        "    CliRunner().invoke(root, args, env={'ALAI_SERVER': 'http://127.0.0.1:9', 'ALAI_TOKEN': 't'})\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "alai.cli.mc" in loaded and [name for name in loaded if name.startswith("alai.server")] == []


def test_mistakes_are_one_line_with_the_fix(env, api, project):
    task_id = ok(mc(env, "create", "Target", "-P", project)).strip()

    unknown = one_line_error(mc(env, "move", task_id, "doing"))
    assert unknown == ("Error: unknown status 'doing'; use one of: todo, in_progress, blocked, review, done, cancelled")
    assert "use one of: todo" in one_line_error(mc(env, "list", "--status", "doing"))
    assert "use one of: todo" in one_line_error(mc(env, "create", "x", "--status", "doing"))

    assert mc(env, "create", "x", "--priority", "9").returncode == 2
    assert mc(env, "show", "abc").returncode == 2
    assert mc(env, "edit", task_id).returncode == 2  # nothing to change
    assert mc(env, "list", "--since", "yesterday").returncode == 2
    assert mc(env, "create", "x", "--due", "31/01/2030").returncode == 2
    assert re.fullmatch(r"Error: no task MC-999999 \(HTTP 404, request \w+\)",
                        one_line_error(mc(env, "show", "999999")))
    assert "empty" in one_line_error(mc(env, "comment", task_id, input=""))

    # Someone else changes the task after we read version 1.
    seen = api.get(f"/v1/mc/tasks/{task_id}")
    assert seen.headers["ETag"] == '"1"'
    assert api.patch(f"/v1/mc/tasks/{task_id}", json={"priority": 0}, headers={"If-Match": '"1"'}).status_code == 200
    stale = one_line_error(mc(env, "edit", task_id, "--title", "Mine", "--if-version", "1"))
    assert stale == f"Error: {task_id} changed since you read it (now version 2); run the command again"
    assert api.get(f"/v1/mc/tasks/{task_id}").json()["title"] == "Target"  # nothing was changed


def test_unreachable_server_is_one_line():
    result = mc({"ALAI_SERVER": "http://127.0.0.1:9", "ALAI_TOKEN": TOKEN}, "list")
    assert "cannot reach http://127.0.0.1:9" in one_line_error(result)


class Watcher:
    """`alai mc watch` in a subprocess, its output read line by line without blocking the test."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen([*ALAI, "mc", "watch", *args], env={**os.environ, **env}, text=True,
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

    def line(self, lines: queue.Queue, contains: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if contains in line:
                return line
        raise AssertionError(f"no line with {contains!r} within {timeout} s; exit code {self.process.poll()}")

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
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


def test_watch_prints_changes_made_after_it_started(env, api, project):
    # Resume from the stream's current end, so nothing made before is replayed.
    events = api.get("/v1/mc/events", params={"after": "0", "limit": 1000}).json()
    since = events[-1]["position"] if events else "0"
    as_json = Watcher(env, "--json", "--since-id", since, "--project", project)
    for_people = Watcher(env, "--since-id", since)
    try:
        for watcher in (as_json, for_people):
            assert "watching" in watcher.line(watcher.stderr, "watching")
        task_id = ok(mc(env, "create", "Watched", "-P", project)).strip()
        ok(mc(env, "move", task_id, "review"))

        created = json.loads(as_json.line(as_json.stdout, task_id))
        assert created["kind"] == "created" and created["task"]["project"] == project
        updated = json.loads(as_json.line(as_json.stdout, task_id))
        assert updated["kind"] == "updated" and updated["changes"] == {"status": ["todo", "review"]}
        line = for_people.line(for_people.stdout, "status: todo → review")
        assert task_id in line and "updated" in line and not ANSI.search(line)
    finally:
        codes = [as_json.interrupt(), for_people.interrupt()]
    assert codes == [0, 0]  # Ctrl-C is how a watch ends
