"""`alai agent` and `alai nodes` end to end: the CLI as a user runs it, against a real `alai serve`.

One server for the module. Most tests play the worker themselves over the worker protocol
(register, claim, events, complete; the admin token holds the `node` scope), so each step
of a run happens exactly when the test says; each test uses a model of its own, so no
other test's worker takes its runs. The last tests run a real `alai node start` against the
fake Ollama, and kill the control plane under a following `alai agent run`.
"""

import json
import os
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

from tests.support.cli import ANSI, cli_server, ok, on_a_terminal, one_line_error
from tests.support.processes import ALAI, run_cli

pytestmark = pytest.mark.e2e

TOKEN = "agent-cli-token"


@pytest.fixture(scope="module")
def server(database_url, tmp_path_factory):
    with cli_server(tmp_path_factory, "agent-cli", database_url=database_url, token=TOKEN,
                    env={"ALAI_RUNS_SWEEP_SECONDS": "0.2"}) as process:
        yield process


@pytest.fixture
def env(server) -> dict[str, str]:
    return {"ALAI_SERVER": server.url, "ALAI_TOKEN": TOKEN, "COLUMNS": "200"}


@pytest.fixture
def api(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        yield client


@pytest.fixture
def name() -> str:
    """An agent name, node name and model no other test uses."""
    return f"a{uuid.uuid4().hex[:8]}"


def agent(env: dict[str, str], *args: str, input: str = "", timeout: float = 60.0) -> subprocess.CompletedProcess:
    # stdin is always a pipe here (empty unless given), never the terminal pytest runs in.
    return run_cli("agent", *args, env=env, input=input, timeout=timeout)






def usage_error(result: subprocess.CompletedProcess) -> str:
    """Exit 2; click's usage lines, then the error, and no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


def register_agent(api: httpx.Client, name: str, *, model: str | None = None, body: str = "You help.") -> None:
    matter = f"---\nname: {name}\nmodel: {model or name + ':7b'}\n---\n"
    response = api.put(f"/v1/agents/{name}", json={"definition": matter + body + "\n"})
    assert response.status_code in (200, 201), response.text


class Worker:
    """The worker side of the protocol, driven by the test: register, claim, write events, complete."""

    def __init__(self, api: httpx.Client, name: str, models: list[str]) -> None:
        self.api, self.name = api, name
        response = api.put(f"/v1/nodes/{name}", json={"capabilities": [f"model:{m}" for m in models],
                                                     "max_concurrency": 2, "hostname": "test"})
        assert response.status_code == 200, response.text
        self.seq: dict[int, int] = {}

    def claim(self, wait: float = 20.0) -> dict:
        response = self.api.post(f"/v1/nodes/{self.name}/claim", json={"capacity": 1, "wait": wait})
        assert response.status_code == 200, response.text
        claims = response.json()
        assert len(claims) == 1, claims
        return claims[0]["run"]

    def emit(self, run: dict, kind: str, data: dict) -> None:
        seq = self.seq.get(run["id"], 0)
        self.seq[run["id"]] = seq + 1
        response = self.api.post(f"/v1/runs/{run['id']}/attempts/{run['attempt']}/events",
                                 json={"events": [{"seq": seq, "kind": kind, "data": data}]},
                                 headers={"X-Alai-Node": self.name})
        assert response.status_code == 204, response.text

    def complete(self, run: dict, outcome: str, **fields) -> dict:
        response = self.api.post(f"/v1/runs/{run['id']}/attempts/{run['attempt']}/complete",
                                 json={"outcome": outcome, **fields}, headers={"X-Alai-Node": self.name})
        assert response.status_code == 200, response.text
        return response.json()

    def heartbeat(self, *runs: dict) -> dict:
        response = self.api.post(f"/v1/nodes/{self.name}/heartbeat",
                                 json={"running": [{"run_id": r["id"], "attempt": r["attempt"]} for r in runs]})
        assert response.status_code == 200, response.text
        return response.json()


class Cli:
    """A CLI process whose stdout and stderr are read as they come (bytes, not lines: output has no newlines)."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen([*ALAI, *args], env={**os.environ, **env}, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.out, self.err = bytearray(), bytearray()
        self.changed = threading.Condition()
        self.pumps = [threading.Thread(target=self._pump, args=(stream, buffer), daemon=True)
                      for stream, buffer in ((self.process.stdout, self.out), (self.process.stderr, self.err))]
        for pump in self.pumps:
            pump.start()

    def _pump(self, stream, buffer: bytearray) -> None:
        while chunk := os.read(stream.fileno(), 65536):
            with self.changed:
                buffer.extend(chunk)
                self.changed.notify_all()

    @property
    def stdout(self) -> str:
        return self.out.decode()

    @property
    def stderr(self) -> str:
        return self.err.decode()

    def wait_for(self, text: str, *, err: bool = False, timeout: float = 20.0) -> None:
        buffer = self.err if err else self.out
        with self.changed:
            if not self.changed.wait_for(lambda: text.encode() in buffer, timeout):
                raise AssertionError(f"{text!r} not on {'stderr' if err else 'stdout'} within {timeout} s; "
                                     f"stdout: {self.stdout!r}; stderr: {self.stderr!r}")

    def finish(self, timeout: float = 30.0) -> int:
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
            for pump in self.pumps:
                pump.join(5)
            self.process.stdout.close()
            self.process.stderr.close()
        assert "Traceback" not in self.stderr, self.stderr
        return code


def run_id_from(cli: Cli) -> int:
    cli.wait_for("(Ctrl-C cancels it)", err=True)
    return int(re.search(r"^run (\d+): ", cli.stderr, re.MULTILINE)[1])


# -- definitions ------------------------------------------------------------------------------------------


def test_definitions_are_put_listed_shown_and_removed(env, api, name, tmp_path):
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "reviewer.md").write_text(f"---\nname: {name}-rev\ndescription: Reviews pull requests\n"
                                        f"model: qwen3.5:27b\ntools: [Read, Grep]\n---\nYou review code.\n")
    (folder / f"{name}-plain.md").write_text("You answer briefly.\n")  # no front matter: the file's name
    (folder / "README.txt").write_text("not an agent")

    assert ok(agent(env, "put", str(folder))).splitlines() == [f"created   {name}-plain v1",
                                                                f"created   {name}-rev v1"]
    assert ok(agent(env, "put", str(folder / "reviewer.md"))) == f"unchanged {name}-rev v1\n"
    (folder / "reviewer.md").write_text(f"---\nname: {name}-rev\ndescription: Reviews carefully\n"
                                        f"model: qwen3.5:27b\n---\nYou review code, twice.\n")
    assert ok(agent(env, "put", str(folder / "reviewer.md"))) == f"updated   {name}-rev v1 → v2\n"
    as_json = json.loads(ok(agent(env, "put", str(folder), "--json")))
    assert [(item["name"], item["result"], item["version"]) for item in as_json] == [
        (f"{name}-plain", "unchanged", 1), (f"{name}-rev", "unchanged", 2)]

    table = ok(agent(env, "ls")).splitlines()
    assert table[0].split() == ["NAME", "VERSION", "MODEL", "EXECUTOR", "DESCRIPTION"]
    row = next(line for line in table if line.startswith(f"{name}-rev "))
    assert row.split()[:4] == [f"{name}-rev", "2", "qwen3.5:27b", "llm"] and row.endswith("Reviews carefully")
    listed = {item["name"]: item for item in json.loads(ok(agent(env, "ls", "--json")))}
    assert listed[f"{name}-rev"]["version"] == 2 and listed[f"{name}-plain"]["model"] is None

    shown = ok(agent(env, "show", f"{name}-rev")).splitlines()
    assert shown[0].startswith(f"{name}-rev  version 2, ")
    assert re.match(r"\s+model\s+qwen3\.5:27b$", next(line for line in shown if "model" in line))
    assert shown[-1] == "You review code, twice."
    first = ok(agent(env, "show", f"{name}-rev", "--version", "1", "--raw"))
    assert first == (folder / "reviewer.md").read_text().replace("carefully", "pull requests").replace(
        ", twice", "").replace("model: qwen3.5:27b\n", "model: qwen3.5:27b\ntools: [Read, Grep]\n")
    assert json.loads(ok(agent(env, "show", f"{name}-rev", "--json")))["system_prompt"].strip() == (
        "You review code, twice.")

    assert ok(agent(env, "rm", f"{name}-plain")) == f"deleted {name}-plain\n"
    assert f"{name}-plain" not in ok(agent(env, "ls"))
    assert "is not registered" in one_line_error(agent(env, "show", f"{name}-plain"))


# -- runs, with the test as the worker ----------------------------------------------------------------------


def test_a_run_streams_its_output_as_it_comes_and_exits_0(env, api, name):
    register_agent(api, name)
    worker = Worker(api, f"{name}-node", [f"{name}:7b"])
    cli = Cli(env, "agent", "run", name, "write a haiku", "--timeout", "10m", "--priority", "3")
    try:
        run_id = run_id_from(cli)
        run = worker.claim()
        assert run["id"] == run_id and run["timeout_seconds"] == 600 and run["priority"] == 3
        cli.wait_for(f"running on {name}-node (attempt 1)", err=True)
        worker.emit(run, "output", {"text": "Old pond, "})
        cli.wait_for("Old pond, ")  # on stdout before the run ends: streamed, not buffered
        worker.emit(run, "tool_call", {"name": "Grep", "arguments": {"pattern": "frog"}})
        worker.emit(run, "output", {"text": "a frog jumps in:\nsplash"})
        worker.emit(run, "usage", {"prompt_tokens": 12, "completion_tokens": 9})
        worker.complete(run, "succeeded", output="Old pond, a frog jumps in:\nsplash",
                        usage={"prompt_tokens": 12, "completion_tokens": 9})
        assert cli.finish() == 0
    finally:
        if cli.process.poll() is None:
            cli.process.kill()
    assert cli.stdout == "Old pond, a frog jumps in:\nsplash"  # as the model wrote it, nothing added
    notes = cli.stderr.splitlines()
    assert notes[0] == f"run {run_id}: {name} v1, model {name}:7b (Ctrl-C cancels it)"
    assert notes[1] in ("queued", f"waiting: no online worker offers model:{name}:7b")
    assert f"running on {name}-node (attempt 1)" in notes
    assert 'Grep({"pattern":"frog"})' in cli.stderr and "usage: prompt_tokens 12, completion_tokens 9" in notes
    assert re.fullmatch(r"succeeded in [\d.hms]+", notes[-1])

    assert ok(agent(env, "result", str(run_id))) == "Old pond, a frog jumps in:\nsplash"
    result = json.loads(ok(agent(env, "result", str(run_id), "--json")))
    assert result["state"] == "succeeded" and result["usage"] == {"prompt_tokens": 12, "completion_tokens": 9}

    logs = ok(agent(env, "logs", str(run_id))).splitlines()
    kinds = [line.split()[1] for line in logs if re.match(r"\d\d:\d\d:\d\d ", line)]
    assert kinds == ["state", "state", "tool_call", "usage", "state"]
    assert logs[2:6] == ["Old pond, ", logs[3], "a frog jumps in:", "splash"]  # output as written, between events
    assert logs[3].endswith('tool_call Grep({"pattern":"frog"})')
    events = [json.loads(line) for line in ok(agent(env, "logs", f"#{run_id}", "--json")).splitlines()]
    assert [event["kind"] for event in events] == ["state", "state", "output", "tool_call", "output", "usage",
                                                   "state"]
    assert events[-1]["data"]["state"] == "succeeded"

    status = ok(agent(env, "status", str(run_id)))
    assert re.search(r"state\s+succeeded", status) and re.search(rf"node\s+{name}-node", status)
    assert re.search(r"attempt\s+1 of 3", status) and re.search(r"timeout\s+10m", status)
    runs = ok(agent(env, "runs", "--agent", name)).splitlines()
    assert runs[0].split() == ["ID", "AGENT", "STATE", "NODE", "ATTEMPT", "CREATED", "REASON"]
    assert runs[1].split()[:5] == [str(run_id), name, "succeeded", f"{name}-node", "1/3"]
    assert [item["id"] for item in json.loads(ok(agent(env, "runs", "--agent", name, "--state", "succeeded",
                                                       "--json")))] == [run_id]
    assert ok(agent(env, "runs", "--agent", name, "--state", "failed,timed-out")) == ""


def test_a_failed_run_exits_1_with_its_reason_on_stderr(env, api, name):
    register_agent(api, name)
    worker = Worker(api, f"{name}-node", [f"{name}:7b"])
    cli = Cli(env, "agent", "run", name, "-", "--max-attempts", "1")
    run = worker.claim()
    worker.emit(run, "output", {"text": "partial"})
    worker.complete(run, "failed", error="model crashed: out of memory")
    assert cli.finish() == 1
    assert cli.stdout == "partial"
    assert cli.stderr.splitlines()[-1] == f"Error: run {run['id']} failed: model crashed: out of memory"

    result = agent(env, "result", str(run["id"]))
    assert result.returncode == 1 and result.stdout == ""  # a failed run has no output to print
    assert result.stderr == f"Error: run {run['id']} failed: model crashed: out of memory\n"


def test_a_retried_attempt_is_shown_and_the_run_can_still_succeed(env, api, name):
    register_agent(api, name)
    worker = Worker(api, f"{name}-node", [f"{name}:7b"])
    cli = Cli(env, "agent", "run", name, "hello", "--json")
    first = worker.claim()
    worker.emit(first, "output", {"text": "lost "})
    worker.complete(first, "failed", error="connection to Ollama reset")
    second = worker.claim()
    assert (second["id"], second["attempt"]) == (first["id"], 2)
    worker.emit(second, "output", {"text": "kept"})
    worker.complete(second, "succeeded", output="kept")
    assert cli.finish() == 0
    events = [json.loads(line) for line in cli.stdout.splitlines()]  # JSON Lines, one event each
    states = [(event["attempt"], event["data"]["state"]) for event in events if event["kind"] == "state"]
    assert states[-3:] == [(1, "queued"), (2, "running"), (2, "succeeded")]
    assert [event["data"]["text"] for event in events if event["kind"] == "output"] == ["lost ", "kept"]
    assert cli.stderr == ""
    assert ok(agent(env, "result", str(first["id"]))) == "kept"


def test_ctrl_c_cancels_the_run_it_follows(env, api, name):
    register_agent(api, name)
    # Nobody offers the model: the run waits, and says why.
    waiting = Cli(env, "agent", "run", name, "x")
    run_id = run_id_from(waiting)
    waiting.wait_for(f"waiting: no online worker offers model:{name}:7b", err=True)
    waiting.process.send_signal(signal.SIGINT)
    assert waiting.finish() == 130
    assert waiting.stderr.splitlines()[-1] == f"run {run_id} cancelled"
    assert api.get(f"/v1/runs/{run_id}").json()["state"] == "cancelled"

    # Running: the worker hears of it at its next heartbeat and stops it.
    worker = Worker(api, f"{name}-node", [f"{name}:7b"])
    running = Cli(env, "agent", "run", name, "y")
    run = worker.claim()
    worker.emit(run, "output", {"text": "working"})
    running.wait_for("working")
    running.process.send_signal(signal.SIGINT)
    assert running.finish() == 130
    assert running.stderr.splitlines()[-1] == f"run {run['id']}: cancel requested; it stops on {name}-node shortly"
    assert worker.heartbeat(run)["cancel"] == [{"run_id": run["id"], "attempt": 1}]
    worker.complete(run, "cancelled", error=f"cancelled by {TOKEN}")
    late = agent(env, "cancel", str(run["id"]))
    assert one_line_error(late).startswith(f"Error: run {run['id']} has already finished (cancelled)")


def test_detach_then_logs_follow_and_result_wait(env, api, name):
    register_agent(api, name)
    run_id = int(ok(agent(env, "run", name, "--detach", input="from stdin\n")))  # piped: the id alone
    assert json.loads(ok(agent(env, "status", str(run_id), "--json")))["state"] in ("queued", "waiting")
    waiting_for = agent(env, "result", str(run_id))
    assert "has not finished" in one_line_error(waiting_for)

    follower = Cli(env, "agent", "logs", str(run_id), "-f")
    result = Cli(env, "agent", "result", str(run_id), "--wait")
    follower.wait_for(f"state     waiting: no online worker offers model:{name}:7b")
    worker = Worker(api, f"{name}-node", [f"{name}:7b"])
    run = worker.claim()
    assert run["id"] == run_id
    worker.emit(run, "output", {"text": "echo: from stdin\n"})
    follower.wait_for("echo: from stdin\n")
    worker.complete(run, "succeeded", output="echo: from stdin\n")
    assert follower.finish() == 0
    assert result.finish() == 0
    assert result.stdout == "echo: from stdin\n"
    lines = follower.stdout.splitlines()
    assert lines[-1].endswith("state     succeeded") and "echo: from stdin" in lines
    assert any(f"running on {name}-node (attempt 1)" in line for line in lines)
    claimed = api.get(f"/v1/runs/{run_id}").json()
    assert claimed["state"] == "succeeded"


def test_a_run_linked_to_a_task_and_the_nodes_table(env, api, name):
    register_agent(api, name)
    task = api.post("/v1/mc/tasks", json={"title": f"Task for {name}"}).json()
    worker = Worker(api, f"{name}-node", [f"{name}:7b", "bge-m3"])
    run_id = int(ok(agent(env, "run", name, "do it", "--task", task["id"].removeprefix("MC-"), "--detach")))
    assert api.get(f"/v1/runs/{run_id}").json()["task_id"] == task["id"]
    run = worker.claim()

    table = ok(run_cli("nodes", env=env)).splitlines()
    assert table[0].split() == ["NAME", "KIND", "ONLINE", "HEARTBEAT", "RUNNING", "MODELS"]
    row = next(line for line in table if line.startswith(f"{name}-node "))
    assert re.match(rf"{name}-node\s+node\s+yes\s+(\d+s ago|just now)\s+{run_id} \(1/2\)\s+", row)
    assert row.endswith(f"{name}:7b, bge-m3:latest") or row.endswith(f"bge-m3:latest, {name}:7b")
    nodes = {node["name"]: node for node in json.loads(ok(run_cli("nodes", "--json", env=env)))}
    assert nodes[f"{name}-node"]["running"] == [run_id] and nodes[f"{name}-node"]["online"] is True
    worker.complete(run, "succeeded", output="done")
    assert ok(agent(env, "runs", "--task", task["id"].lower())).splitlines()[1].split()[:3] == [
        str(run_id), name, "succeeded"]


def test_mistakes_are_one_line_with_the_fix(env, api, name):
    register_agent(api, name)
    assert "is not registered" in one_line_error(agent(env, "run", f"{name}-ghost", "hi"))
    assert usage_error(agent(env, "run", name, "hi", "--timeout", "soon")) == (
        "Error: Invalid value for '--timeout': 'soon' is not a duration; use 90s, 10m, 1h, 1h30m or seconds")
    assert "out of range" in usage_error(agent(env, "run", name, "hi", "--timeout", "2d"))
    assert one_line_error(agent(env, "run", name, "-", input="x" * (1024 * 1024 + 10))) == (
        "Error: the input is too large: 1,048,586 bytes; at most 1,048,576 (1 MiB) are allowed")
    assert "there is no Mission Control task 'MC-999999'" in one_line_error(
        agent(env, "run", name, "hi", "--task", "999999"))
    assert one_line_error(agent(env, "status", "99999999")).startswith("Error: there is no run 99999999")
    assert "is not a run id" in usage_error(agent(env, "logs", "latest"))
    assert "does not exist" in usage_error(agent(env, "put", "/nonexistent/agent.md"))
    assert api.get("/v1/runs", params={"agent": name}).json()["items"] == []  # none of it made a run
    unreachable = agent({**env, "ALAI_SERVER": "http://127.0.0.1:9"}, "runs")
    assert one_line_error(unreachable).startswith("Error: cannot reach http://127.0.0.1:9")



def test_colours_on_a_terminal_and_never_with_no_color_or_piped(env, api, name):
    register_agent(api, name)
    run_id = ok(agent(env, "run", name, "x", "--detach")).strip()
    terminal = {**env, "TERM": "xterm-256color"}
    for args in (("agent", "runs", "--agent", name), ("agent", "logs", run_id), ("nodes",)):
        if args == ("nodes",):
            Worker(api, f"{name}-node", [f"{name}:7b"])
        assert ANSI.search(on_a_terminal(terminal, *args)), args
        plain = on_a_terminal({**terminal, "NO_COLOR": "1"}, *args)
        assert plain.strip() and not ANSI.search(plain)
        ok(run_cli(*args, env=terminal))  # piped (ok() checks there is no escape)
    # On a terminal, --detach says more than the id.
    assert "(alai agent logs " in on_a_terminal(env, "agent", "run", name, "y", "--detach")


def test_the_agent_commands_never_import_the_server():
    probe = (
        "import json, sys\nfrom click.testing import CliRunner\nfrom alai.cli.main import root\n"
        "for args in (['agent', '--help'], ['agent', 'ls'], ['agent', 'run', 'a', 'x'], ['agent', 'logs', '1'],\n"
        "             ['agent', 'runs'], ['nodes']):\n"
        "    CliRunner().invoke(root, args, env={'ALAI_SERVER': 'http://127.0.0.1:9', 'ALAI_TOKEN': 't'})\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert "alai.cli.agent" in loaded and "alai.cli.nodes" in loaded
    assert [module for module in loaded if module.startswith("alai.server")] == []


# -- with real processes: the control plane killed under a follower -----------------------------------------


def test_run_follows_through_a_control_plane_restart(serve, database_url, name):
    """SIGKILL under a following `alai agent run`; the server comes back on the same port; the CLI resumes
    after the last event it printed: the whole output once, exit 0."""
    server_env = {"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": TOKEN, "ALAI_RUNS_LEASE_SECONDS": "60"}
    victim = serve(env=server_env)
    victim.wait_ready()
    env = {"ALAI_SERVER": victim.url, "ALAI_TOKEN": TOKEN}
    with httpx.Client(base_url=victim.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as api:
        register_agent(api, name)
        worker = Worker(api, f"{name}-node", [f"{name}:7b"])
        cli = Cli(env, "agent", "run", name, "count")
        run = worker.claim()
        for n in range(3):
            worker.emit(run, "output", {"text": f"{n} "})
        cli.wait_for("0 1 2 ")
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)
    cli.wait_for("connection lost", err=True)
    back = serve(env=server_env, port=victim.port)
    back.wait_ready()
    with httpx.Client(base_url=back.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as api:
        worker.api = api
        worker.heartbeat(run)
        for n in range(3, 6):
            worker.emit(run, "output", {"text": f"{n} "})
        worker.complete(run, "succeeded", output="0 1 2 3 4 5 ")
    assert cli.finish(60) == 0
    assert cli.stdout == "0 1 2 3 4 5 "  # nothing lost, nothing twice


# -- with a real `alai node start` and the fake Ollama ------------------------------------------------------


def test_a_real_node_runs_streams_and_is_cancelled_by_ctrl_c(env, api, name, tmp_path):
    from tests.fakes.ollama import FakeOllamaProcess

    model = f"{name}:7b"
    ollama = FakeOllamaProcess(f"{name}-ollama", [model], delay=0.05)  # 50 ms a word
    ollama.start()
    home = tmp_path / "node-home"
    with open(tmp_path / "node.log", "wb") as log:
        node = subprocess.Popen([*ALAI, "node", "start", "--name", f"{name}-node", "--ollama", ollama.url,
                                 "--refresh", "0.5"],
                                env={**os.environ, **env, "HOME": str(home), "ALAI_CONFIG_DIR": str(home / "config")},
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        register_agent(api, name, model=model, body="You echo.")
        deadline = time.monotonic() + 30
        while not any(n["name"] == f"{name}-node" and n["online"] and model in n["models"]
                      for n in api.get("/v1/nodes").json()):
            assert time.monotonic() < deadline, (tmp_path / "node.log").read_text()
            time.sleep(0.2)
        row = next(line for line in ok(run_cli("nodes", env=env)).splitlines() if line.startswith(f"{name}-node "))
        assert row.split()[1:3] == ["node", "yes"] and row.endswith(model)

        result = agent(env, "run", name, "the quick brown fox", timeout=90)
        assert ok(result) == f"[{name}-ollama] echo: the quick brown fox"
        assert f"running on {name}-node (attempt 1)" in result.stderr

        # 400 words at 50 ms: Ctrl-C comes long before the end, and reaches the model call on the node.
        long = Cli(env, "agent", "run", name, " ".join(f"w{n}" for n in range(400)))
        run_id = run_id_from(long)
        long.wait_for("echo: w0 w1 ")
        long.process.send_signal(signal.SIGINT)
        assert long.finish() == 130
        assert long.stderr.splitlines()[-1] == f"run {run_id}: cancel requested; it stops on {name}-node shortly"
        deadline = time.monotonic() + 30
        while (state := api.get(f"/v1/runs/{run_id}").json()["state"]) != "cancelled":
            assert state == "running" and time.monotonic() < deadline, state
            time.sleep(0.1)
        events = [json.loads(line) for line in ok(agent(env, "logs", str(run_id), "--json")).splitlines()]
        echoed = "".join(event["data"]["text"] for event in events if event["kind"] == "output")
        assert echoed.startswith(f"[{name}-ollama] echo: w0 w1 ") and "w399" not in echoed  # stopped midway
        assert events[-1]["data"]["state"] == "cancelled"

        # A timeout stops the model call the same way: 20 s of words, a 2 s limit.
        started = time.monotonic()
        timed = api.post("/v1/runs", json={"agent": name, "input": " ".join(f"t{n}" for n in range(400)),
                                           "timeout_seconds": 2}).json()
        while (state := api.get(f"/v1/runs/{timed['id']}").json()["state"]) != "timed_out":
            assert state in ("queued", "running") and time.monotonic() - started < 15, state
            time.sleep(0.1)
        while timed["id"] in next(n for n in api.get("/v1/nodes").json() if n["name"] == f"{name}-node")["running"]:
            assert time.monotonic() - started < 15, "the node still holds the timed-out run"
            time.sleep(0.1)
        timed_events = api.get(f"/v1/runs/{timed['id']}/events").json()["items"]
        said = "".join(e["data"].get("text", "") for e in timed_events if e["kind"] == "output")
        assert said.startswith(f"[{name}-ollama] echo: t0 ") and "t399" not in said
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait(5)
        ollama.kill()
        shutil.rmtree(home, ignore_errors=True)
