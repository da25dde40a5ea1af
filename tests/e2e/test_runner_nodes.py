"""The runner with real processes: `alai serve`, `alai node start` on two "machines",
each with a fake Ollama. Kill a node mid-run, cancel, time out, a model whose only node
goes away, a control plane restarted under load."""

import os
import time
from pathlib import Path

import httpx
import pytest

from tests.fakes.ollama import FakeOllamaProcess
from tests.support.processes import free_port, start_node
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "runner-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
FAST = {"ALAI_ADMIN_TOKEN": TOKEN, "ALAI_RUNS_LEASE_SECONDS": "2", "ALAI_NODES_OFFLINE_SECONDS": "2",
        "ALAI_RUNS_SWEEP_SECONDS": "0.2", "ALAI_MASTER_KEY": "u2l8uGf6n6Ri6yVVbmFrOkhVSnx2kU4lIoPp6XYn9s0="}


def agent(name: str, model: str | None = None, **extra: str) -> str:
    lines = [f"name: {name}"] + ([f"model: {model}"] if model else []) + [f"{k}: {v}" for k, v in extra.items()]
    return "---\n" + "\n".join(lines) + "\n---\nYou help.\n"


@pytest.fixture
def fakes():
    started = []

    def make(name, models, delay=0.0):
        fake = FakeOllamaProcess(name, models, delay)
        fake.start()
        started.append(fake)
        return fake

    yield make
    for fake in started:
        if fake.process and fake.process.poll() is None:
            fake.kill()


@pytest.fixture
def nodes(tmp_path):
    started = []

    def make(name, server, ollama=None, extra=(), env=None):
        node = start_node(name, server=server.url, token=TOKEN, ollama=ollama, log_dir=tmp_path, extra=extra,
                          env=env)
        started.append(node)
        return node

    yield make
    for node in started:
        node.kill()


@pytest.fixture
def server(serve, database_url):
    process = serve(env={"ALAI_DATABASE_URL": database_url, **FAST})
    process.wait_ready()
    return process


def api(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=HEADERS, timeout=10)


def online(http, *names):
    listed = {node["name"]: node for node in http.get("/v1/nodes").json()}
    return all(name in listed and listed[name]["online"] and listed[name]["models"] for name in names)


def run_state(http, run_id):
    return http.get(f"/v1/runs/{run_id}").json()


def finished(http, run_id):
    run = run_state(http, run_id)
    return run if run["state"] in ("succeeded", "failed", "cancelled", "timed_out") else None


def test_a_killed_node_s_run_is_finished_by_another_as_attempt_2(server, fakes, nodes):
    anvil_ollama = fakes("anvil", ["shared:latest"], delay=0.05)
    forge_ollama = fakes("forge", ["shared:latest"], delay=0.05)
    with api(server) as http:
        http.put("/v1/agents/writer", json={"definition": agent("writer", "shared")}).raise_for_status()
        anvil = nodes("anvil", server, anvil_ollama.url)
        forge = nodes("forge", server, forge_ollama.url)
        wait_until(lambda: online(http, "anvil", "forge"), what="both nodes online")
        words = " ".join(f"w{i}" for i in range(80))  # ~4 s of streaming
        run = http.post("/v1/runs", json={"agent": "writer", "input": words}).json()

        def streaming():
            state = run_state(http, run["id"])
            events = http.get(f"/v1/runs/{run['id']}/events").json()["items"]
            return state if state["state"] == "running" and any(e["kind"] == "output" for e in events) else None
        first = wait_until(streaming, what="output from the first attempt")
        victim, survivor = (anvil, "forge") if first["node"] == "anvil" else (forge, "anvil")
        victim.kill()  # kill -9 in the middle of the run

        done = wait_until(lambda: finished(http, run["id"]), what="the run to finish")
        assert done["state"] == "succeeded" and done["attempt"] == 2 and done["node"] == survivor
        result = http.get(f"/v1/runs/{run['id']}/result").json()
        assert result["output"].startswith(f"[{survivor}] echo: w0") and result["output"].rstrip().endswith("w79")

        late = http.post(f"/v1/runs/{run['id']}/attempts/1/complete", headers={"X-Alai-Node": first["node"]},
                         json={"outcome": "succeeded", "output": "from the dead"})
        assert late.status_code == 409
        assert http.get(f"/v1/runs/{run['id']}/result").json()["output"] == result["output"]
        states = [e["data"] for e in http.get(f"/v1/runs/{run['id']}/events").json()["items"] if e["kind"] == "state"]
        assert [s["state"] for s in states] == ["queued", "running", "queued", "running", "succeeded"]
        assert "stopped renewing its lease" in states[2]["reason"]


SLEEPER = "sh -c 'sleep 300 & echo $! > \"$PIDFILE\"; wait'"


def _pid_gone(path: Path):
    def check():
        if not path.exists() or not path.read_text().strip():
            return False
        try:
            os.kill(int(path.read_text()), 0)
        except ProcessLookupError:
            return True
        return False
    return check


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancel_and_timeout_kill_the_executing_process_group(server, nodes, tmp_path, how):
    pidfile = tmp_path / "child.pid"
    with api(server) as http:
        http.put("/v1/agents/sleeper", json={"definition": agent("sleeper", executor="command",
                                                                 command="sleeper")}).raise_for_status()
        nodes("box", server, ollama=f"http://127.0.0.1:{free_port()}", extra=("--command", f"sleeper={SLEEPER}"),
              env={"PIDFILE": str(pidfile)})
        body = {"agent": "sleeper", "input": "zzz"} | ({"timeout_seconds": 2} if how == "timeout" else {})
        run = http.post("/v1/runs", json=body).json()
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="the command to start")
        if how == "cancel":
            assert http.post(f"/v1/runs/{run['id']}/cancel").json()["cancel_requested"]
        done = wait_until(lambda: finished(http, run["id"]), what="the run to end")
        assert done["state"] == ("cancelled" if how == "cancel" else "timed_out")
        wait_until(_pid_gone(pidfile), timeout=10, what="the grandchild to be killed")


def test_runs_for_a_model_whose_only_node_is_away_wait_and_resume(server, fakes, nodes):
    anvil_ollama = fakes("anvil", ["alaiml-task:latest"])
    with api(server) as http:
        http.put("/v1/agents/tasker", json={"definition": agent("tasker", "alaiml-task")}).raise_for_status()
        anvil = nodes("anvil", server, anvil_ollama.url)
        wait_until(lambda: online(http, "anvil"), what="anvil online")
        anvil.stop()  # ANVIL goes away
        wait_until(lambda: not online(http, "anvil"), what="anvil offline")
        runs = [http.post("/v1/runs", json={"agent": "tasker", "input": f"task {i}"}).json() for i in range(3)]
        assert all(run["state"] == "waiting" and "anvil" in run["reason"] for run in runs)
        time.sleep(1.0)
        assert all(run_state(http, run["id"])["state"] == "waiting" for run in runs)  # nothing fails meanwhile

        nodes("anvil", server, anvil_ollama.url)  # back
        for run in runs:
            done = wait_until(lambda run=run: finished(http, run["id"]), what="the paused runs to complete")
            assert done["state"] == "succeeded" and done["attempt"] == 1


def test_runs_queued_and_running_on_a_node_that_dies_wait_for_it_and_finish_when_it_returns(server, fakes, nodes):
    """kill -9 of the only node with the model, one run on it and three queued behind:
    all four wait (none fails, the running one's lease lapses into the queue), and all
    complete once it is back — the interrupted one as attempt 2."""
    anvil_ollama = fakes("anvil", ["alaiml-task:latest"], delay=0.1)
    with api(server) as http:
        http.put("/v1/agents/tasker", json={"definition": agent("tasker", "alaiml-task")}).raise_for_status()
        anvil = nodes("anvil", server, anvil_ollama.url, extra=("--concurrency", "1"))
        wait_until(lambda: online(http, "anvil"), what="anvil online")
        runs = [http.post("/v1/runs", json={"agent": "tasker", "input": " ".join(["word"] * 40)}).json()
                for _ in range(4)]
        wait_until(lambda: run_state(http, runs[0]["id"])["state"] == "running", what="the first run to start")
        anvil.kill()  # 40 words at 100 ms: it dies mid-run, the other three still queued

        def all_waiting():
            states = [run_state(http, run["id"]) for run in runs]
            return states if all(s["state"] == "waiting" for s in states) else None
        waiting = wait_until(all_waiting, timeout=20, what="every run to wait")
        assert all("anvil" in s["reason"] for s in waiting)

        nodes("anvil", server, anvil_ollama.url)  # back
        done = [wait_until(lambda run=run: finished(http, run["id"]), timeout=60, what="the runs to complete")
                for run in runs]
        assert [d["state"] for d in done] == ["succeeded"] * 4
        assert [d["attempt"] for d in done] == [2, 1, 1, 1]


def test_a_node_s_models_come_from_its_ollama(server, fakes, nodes):
    ollama = fakes("anvil", ["alaiml-task:latest"])
    with api(server) as http:
        nodes("anvil", server, ollama.url)
        wait_until(lambda: online(http, "anvil"), what="anvil online")
        ollama.kill()  # Ollama dies, the node lives: it stops offering the model
        wait_until(lambda: not {n["name"]: n for n in http.get("/v1/nodes").json()}["anvil"]["models"],
                   what="the model to be withdrawn")


def test_a_control_plane_restarted_under_load_loses_no_run_and_runs_none_twice(serve, database_url, fakes, nodes):
    port = free_port()
    env = {"ALAI_DATABASE_URL": database_url, **FAST}
    server = serve(env=env, port=port)
    server.wait_ready()
    anvil_ollama = fakes("anvil", ["shared:latest"], delay=0.02)
    forge_ollama = fakes("forge", ["shared:latest"], delay=0.02)
    with api(server) as http:
        http.put("/v1/agents/writer", json={"definition": agent("writer", "shared")}).raise_for_status()
        nodes("anvil", server, anvil_ollama.url)
        nodes("forge", server, forge_ollama.url)
        wait_until(lambda: online(http, "anvil", "forge"), what="nodes online")
        ids = [http.post("/v1/runs", json={"agent": "writer", "input": f"job {i} a b c d e"}).json()["id"]
               for i in range(30)]

        def in_flight():
            states = [http.get(f"/v1/runs/{run_id}").json()["state"] for run_id in ids]
            return states if "running" in states and states.count("succeeded") < len(ids) - 2 else None
        at_kill = wait_until(in_flight, what="runs in flight")
    server.process.kill()  # mid-load: runs running and queued, maybe some done
    server.process.wait(10)
    restarted = serve(env=env, port=port)
    restarted.wait_ready()
    with api(restarted) as http:
        for run_id in ids:
            done = wait_until(lambda run_id=run_id: finished(http, run_id), timeout=60, what=f"run {run_id}")
            assert done["state"] == "succeeded", done
            states = [e["data"]["state"] for e in http.get(f"/v1/runs/{run_id}/events").json()["items"]
                      if e["kind"] == "state"]
            assert states.count("succeeded") == 1 and states[-1] == "succeeded"
            output = http.get(f"/v1/runs/{run_id}/result").json()["output"]
            assert f"echo: job {ids.index(run_id)} a b c d e" in output
    assert "running" in at_kill  # the kill did land in the middle of the work


def test_a_cloud_worker_runs_cloud_models_through_the_gateway(serve, database_url, fakes, nodes, tmp_path):
    from tests.fakes.anthropic import FakeAnthropicProcess
    from tests.fakes.openai_compat import FakeOpenAIProcess

    llama = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    together = FakeOpenAIProcess("together", [llama], extra=("--api-key", "tg-key"))
    claude = FakeAnthropicProcess("claude", ["claude-sonnet-4-5"], extra=("--api-key", "sk-ant"))
    for fake in (together, claude):
        fake.start()
    try:
        config = tmp_path / "gateway.yaml"
        down = f"http://127.0.0.1:{free_port()}"  # ANVIL is away
        config.write_text(f"""
backends:
  - {{name: anvil, kind: ollama, url: "{down}", health_interval_seconds: 0.5, connect_timeout_seconds: 0.5}}
  - {{name: together, kind: openai, url: "{together.url}", api_key: "tg-key"}}
  - {{name: claude, kind: anthropic, url: "{claude.url}", api_key: "sk-ant"}}
models:
  "orchestrator":
    routes: [{{backend: anvil}}, {{backend: together, model: "{llama}"}}]
  "claude-sonnet":
    routes: [{{backend: claude, model: "claude-sonnet-4-5"}}]
  "alaiml-task":
    routes: [{{backend: anvil}}]
    when_down: pause
""")
        agents_dir = tmp_path / "agents"
        agents_dir.mkdir()
        (agents_dir / "reviewer.md").write_text(agent("reviewer", "claude-sonnet", description="Reviews"))
        (agents_dir / "planner.md").write_text(agent("planner", "orchestrator"))
        (agents_dir / "broken.md").write_text("---\nexecutor: teleport\n---\nx")
        server = serve(env={"ALAI_DATABASE_URL": database_url, "ALAI_GATEWAY_CONFIG": str(config),
                            "ALAI_AGENTS_DIR": str(agents_dir), **FAST})
        server.wait_ready()
        worker = nodes("cloud-1", server)
        worker.stop()
        worker.args[:2] = ["worker"]  # the same process helper, as `alai worker`
        worker.args = [a for a in worker.args if a not in ("--refresh", "0.5")]
        worker.start()
        with api(server) as http:
            names = {a["name"] for a in http.get("/v1/agents").json()}  # (earlier tests' agents share the database)
            assert {"planner", "reviewer"} <= names and "broken" not in names
            assert "broken" in server.log() and "executor must be llm or command" in server.log()
            wait_until(lambda: online(http, "cloud-1"), what="the worker online")
            listed = {n["name"]: n for n in http.get("/v1/nodes").json()}["cloud-1"]
            assert listed["kind"] == "worker"
            assert sorted(listed["models"]) == ["claude-sonnet:latest", "orchestrator:latest"]  # not alaiml-task

            review = http.post("/v1/runs", json={"agent": "reviewer", "input": "check this"}).json()
            plan = http.post("/v1/runs", json={"agent": "planner", "input": "plan that"}).json()
            paused = http.post("/v1/runs", json={"agent": "planner", "model": "alaiml-task", "input": "x"}).json()
            assert paused["state"] == "waiting"
            for run, backend, said in ((review, "claude", "check this"), (plan, "together", "plan that")):
                done = wait_until(lambda run=run: finished(http, run["id"]), what=f"run {run['id']}")
                assert done["state"] == "succeeded", done
                output = http.get(f"/v1/runs/{run['id']}/result").json()["output"]
                assert output.startswith(f"[{backend}] echo:") and said in output
            usage = http.get("/v1/gateway/usage", params={"by": "backend"}).json()
            assert {row["key"] for row in usage["rows"]} >= {"claude", "together"}
            assert run_state(http, paused["id"])["state"] == "waiting"
    finally:
        for fake in (together, claude):
            fake.kill()


def test_a_run_s_events_over_websocket_end_with_its_final_state(server, fakes, nodes):
    import json

    from websockets.sync.client import connect

    ollama = fakes("anvil", ["shared:latest"], delay=0.01)
    with api(server) as http:
        http.put("/v1/agents/writer", json={"definition": agent("writer", "shared")}).raise_for_status()
        run = http.post("/v1/runs", json={"agent": "writer", "input": "one two three"}).json()
        nodes("anvil", server, ollama.url)
        url = f"{server.url.replace('http://', 'ws://')}/v1/runs/{run['id']}/ws"
        frames = []
        with connect(url, additional_headers=HEADERS, open_timeout=5, max_queue=None, close_timeout=2) as ws:
            for raw in ws:
                frames.append(json.loads(raw))
        states = [f["data"]["state"] for f in frames if f["kind"] == "state"]
        # Waiting until the node registers (queued if the sweeper saw it first, or if an earlier test's
        # anvil still counts as online), then it runs.
        assert states[0] in ("waiting", "queued") and states[-2:] == ["running", "succeeded"]
        text = "".join(f["data"]["text"] for f in frames if f["kind"] == "output")
        assert text == "[anvil] echo: one two three"
        assert any(f["kind"] == "usage" and f["data"]["completion_tokens"] for f in frames)
        # Resuming after the third event gives the rest, and nothing after the end.
        with connect(f"{url}?after={frames[2]['position']}", additional_headers=HEADERS, open_timeout=5,
                     max_queue=None, close_timeout=2) as ws:
            rest = [json.loads(raw) for raw in ws]
        assert [f["id"] for f in rest] == [f["id"] for f in frames[3:]]


def test_a_command_gets_its_agent_s_secrets_and_nothing_else(server, nodes, tmp_path):
    import hashlib
    import sys

    probe = tmp_path / "probe.py"
    probe.write_text("import os, httpx\n"
                     "url = os.environ['ALAI_SERVER'] + '/v1/secrets/values/other/x'\n"
                     "auth = {'Authorization': 'Bearer ' + os.environ['ALAI_TOKEN']}\n"
                     "print('other/x:', httpx.get(url, headers=auth).status_code)\n")
    command = f"sh -c 'printf %s \"$DB_PASSWORD\" | sha256sum; {sys.executable} {probe}'"
    with api(server) as http:
        http.put("/v1/secrets/values/team/db", json={"value": "s3cr3t-db"}).raise_for_status()
        http.put("/v1/secrets/values/other/x", json={"value": "not yours"}).raise_for_status()
        definition = agent("deployer", executor="command", command="deploy") \
            .replace("---\nYou", "env: {DB_PASSWORD: secret://team/db}\n---\nYou")
        http.put("/v1/agents/deployer", json={"definition": definition}).raise_for_status()
        nodes("box", server, ollama=f"http://127.0.0.1:{free_port()}", extra=("--command", f"deploy={command}"))
        run = http.post("/v1/runs", json={"agent": "deployer", "input": ""}).json()
        done = wait_until(lambda: finished(http, run["id"]), what="the command run")
        assert done["state"] == "succeeded", done
        output = http.get(f"/v1/runs/{run['id']}/result").json()["output"]
        assert hashlib.sha256(b"s3cr3t-db").hexdigest() in output and "other/x: 403" in output
