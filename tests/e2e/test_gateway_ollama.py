"""The model gateway's Ollama surface, end to end: the official `ollama` client against a
real `alai serve` routing to two fake Ollama processes ("anvil", "forge"), one of
which is killed and brought back."""

import json
import re
import socket
import subprocess
import sys
import threading
import time

import anthropic
import httpx
import ollama
import openai
import psycopg
import pytest

from tests.fakes.anthropic import FakeAnthropicProcess
from tests.fakes.ollama import FakeOllamaProcess
from tests.fakes.openai_compat import FakeOpenAIProcess
from tests.support.processes import run_cli, start_serve
from tests.support.waiting import wait_until

pytestmark = pytest.mark.e2e
TOKEN = "gateway-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


@pytest.fixture(scope="module")
def fakes():
    anvil = FakeOllamaProcess("anvil", ["qwen3.5:27b", "alaiml-task:latest", "bge-m3:latest", "orchestrator:latest"],
                              delay=0.002)
    forge = FakeOllamaProcess("forge", ["devstral:24b", "qwen2.5-coder:32b"])
    together = FakeOpenAIProcess("together", [LLAMA, "BAAI/bge-large-en-v1.5"], extra=("--api-key", "tg-key-123"))
    claude = FakeAnthropicProcess("claude", ["claude-sonnet-4-5"], extra=("--api-key", "sk-ant-fake-1"))
    for fake in (anvil, forge, together, claude):
        fake.start()
    yield anvil, forge, together, claude
    for fake in (anvil, forge, together, claude):
        if fake.process and fake.process.poll() is None:
            fake.kill()


@pytest.fixture(scope="module")
def gateway(fakes, database_url, tmp_path_factory):
    anvil, forge, together, claude = fakes
    base = tmp_path_factory.mktemp("gateway")
    config = base / "gateway.yaml"
    config.write_text(f"""
backends:
  - {{name: anvil, kind: ollama, url: "{anvil.url}", health_interval_seconds: 0.5, connect_timeout_seconds: 1}}
  - {{name: forge, kind: ollama, url: "{forge.url}", health_interval_seconds: 0.5, api_key: "env:FORGE_KEY"}}
  - {{name: together, kind: openai, url: "{together.url}", health_interval_seconds: 0.5, api_key: "env:TOGETHER_KEY"}}
  - {{name: together-bad-key, kind: openai, url: "{together.url}", api_key: "not-the-key"}}
  - {{name: claude, kind: anthropic, url: "{claude.url}", health_interval_seconds: 0.5, api_key: "env:ANTHROPIC_KEY"}}
models:
  "qwen3.5:27b":
    routes: [{{backend: anvil}}, {{backend: forge, model: "qwen2.5-coder:32b"}}]
  "alaiml-task":
    routes: [{{backend: anvil}}]
    when_down: pause
    retry_after_seconds: 7
  "orchestrator":
    routes: [{{backend: anvil}}, {{backend: together, model: "{LLAMA}"}}]
  "llama-70b":
    routes: [{{backend: together, model: "{LLAMA}"}}]
  "cloud-embed":
    routes: [{{backend: together, model: "BAAI/bge-large-en-v1.5"}}]
  "ghost":
    routes: [{{backend: anvil, model: "not-on-anvil"}}, {{backend: forge, model: "devstral:24b"}}]
  "claude-sonnet":
    routes: [{{backend: claude, model: "claude-sonnet-4-5"}}]
  "wrong-key":
    routes: [{{backend: together-bad-key, model: "{LLAMA}"}}]
prices:
  - {{backend: together, input_per_million: 0.88, output_per_million: 0.88}}
""")
    process = start_serve(env={"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": TOKEN,
                               "ALAI_DATA_DIR": str(base / "data"), "ALAI_GATEWAY_CONFIG": str(config),
                               "FORGE_KEY": "sk-forge-secret-value", "TOGETHER_KEY": "tg-key-123",
                               "ANTHROPIC_KEY": "sk-ant-fake-1"}, log_path=base / "serve.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.process.terminate()
        process.process.wait(30)
        log = (base / "serve.log").read_text()
        assert "sk-forge-secret-value" not in log and "tg-key-123" not in log and "sk-ant-fake-1" not in log


@pytest.fixture
def api(gateway):
    """The official client, as a script would make it (plus the token `alai start` adds)."""
    made = ollama.Client(host=gateway.url, headers=AUTH)
    yield made
    made._client.close()


def chat_text(api: ollama.Client, model: str, prompt: str, *, stream: bool) -> str:
    messages = [{"role": "user", "content": prompt}]
    if stream:
        return "".join(part.message.content for part in api.chat(model=model, messages=messages, stream=True))
    return api.chat(model=model, messages=messages).message.content


def cli_env(gateway) -> dict[str, str]:
    return {"ALAI_SERVER": gateway.url, "ALAI_TOKEN": TOKEN, "ALAI_KEYRING": "off", "COLUMNS": "200"}


def status(gateway) -> dict:
    return httpx.get(gateway.url + "/v1/gateway/status", headers=AUTH).json()


def test_the_official_client_works_through_the_gateway(gateway, api):
    names = {model.model for model in api.list().models}
    assert {"qwen3.5:27b", "alaiml-task:latest", "bge-m3:latest", "devstral:24b", "qwen2.5-coder:32b"} <= names
    assert chat_text(api, "qwen3.5:27b", "hello there", stream=True) == "[anvil] echo: hello there"
    assert chat_text(api, "qwen3.5:27b", "hello there", stream=False) == "[anvil] echo: hello there"
    parts = list(api.chat(model="qwen3.5:27b", messages=[{"role": "user", "content": "a b c"}], stream=True))
    assert len(parts) > 3 and parts[-1].done and parts[-1].done_reason == "stop" and parts[-1].eval_count
    assert all(part.model == "qwen3.5:27b" for part in parts)
    assert api.generate(model="devstral:24b", prompt="write code").response == "[forge] echo: write code"
    assert len(api.embed(model="bge-m3", input=["one", "two"]).embeddings) == 2
    assert api.show("devstral:24b").modelfile.startswith("# served by forge")
    assert api.ps().models
    assert httpx.get(gateway.url + "/api/version", headers=AUTH).json() == {"version": "0.12.3"}
    root = httpx.get(gateway.url + "/", headers=AUTH)
    assert root.status_code == 200 and root.text == "Ollama is running"
    with pytest.raises(ollama.ResponseError) as missing:
        api.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404 and "not found" in missing.value.error


def test_a_model_missing_upstream_is_a_404_not_a_failover(gateway, api):
    with pytest.raises(ollama.ResponseError) as missing:
        api.chat(model="ghost", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404 and "not-on-anvil" in missing.value.error  # forge was not asked
    assert {b["name"]: b["up"] for b in status(gateway)["backends"]}["anvil"] is True  # and anvil is not "down"


def test_bad_input_gets_ollama_style_errors(gateway):
    url = gateway.url + "/api/chat"
    for content, status_code, fragment in ((b"{not json", 400, "invalid JSON"), (b"", 400, "missing request body"),
                                           (b'{"messages": []}', 400, "model is required"),
                                           (b"[1, 2]", 400, "JSON object"),
                                           (b'{"model": "a\\u0000b"}', 400, "control characters"),
                                           (b'{"model": "qwen3.5:27b", "messages": ["hi"]}', 400,
                                            "list of objects")):
        answer = httpx.post(url, content=content, headers=AUTH)
        assert answer.status_code == status_code and fragment in answer.json()["error"], answer.text
    # An oversized body is refused from its declared length, before it is read.
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(f"POST /api/chat HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {65 * 1024 * 1024}\r\n\r\n".encode())
        reply = b""
        while b"too large" not in reply:  # headers and body may come in separate packets
            received = raw.recv(65536)
            if not received:
                break
            reply += received
    assert reply.startswith(b"HTTP/1.1 413") and b"too large" in reply
    assert httpx.post(url, json={"model": "qwen3.5:27b"}).status_code == 401  # no token, no models


def test_config_and_status_show_no_secret(gateway):
    config = httpx.get(gateway.url + "/v1/gateway/config", headers=AUTH)
    assert config.status_code == 200 and "sk-forge" not in config.text
    forge = next(b for b in config.json()["backends"] if b["name"] == "forge")
    assert forge["api_key_set"] is True and "api_key" not in forge
    state = status(gateway)
    assert {b["name"]: b["up"] for b in state["backends"]} == {"anvil": True, "forge": True, "together": True,
                                                               "together-bad-key": False, "claude": True}
    bad = next(b for b in state["backends"] if b["name"] == "together-bad-key")
    assert "refused the gateway's credentials" in bad["reason"]
    assert state["models"]["qwen3.5:27b"] == {"state": "routed", "backend": "anvil", "upstream_model": "qwen3.5:27b"}
    shown = run_cli("gateway", "status", env=cli_env(gateway))
    assert shown.returncode == 1, shown.stderr  # together-bad-key is down
    assert re.search(r"together-bad-key\s+openai\s+down", shown.stdout)
    assert re.search(r"anvil\s+ollama\s+up", shown.stdout) and re.search(r"qwen3\.5:27b\s+→ anvil", shown.stdout)


def test_anvil_down_fallbacks_answer_paused_models_wait_and_traffic_returns(gateway, fakes, api):
    anvil = fakes[0]
    results: list[tuple[str, str]] = []
    stop = threading.Event()

    def load(stream: bool) -> None:
        while not stop.is_set():
            try:
                results.append(("ok", chat_text(api, "qwen3.5:27b", "steady", stream=stream)))
            except ollama.ResponseError as error:
                results.append(("error", error.error))

    workers = [threading.Thread(target=load, args=(stream,)) for stream in (True, False, True, False)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    anvil.kill()
    time.sleep(1.5)
    stop.set()
    for worker in workers:
        worker.join(30)
    served_by = [text.split("]")[0] + "]" for kind, text in results if kind == "ok"]
    failed = [text for kind, text in results if kind == "error"]
    assert "[anvil]" in served_by and "[forge]" in served_by
    # Only a stream cut off by the kill may fail, and it says so; nothing else fails.
    assert all("failed during the answer" in text for text in failed), failed
    assert len(failed) <= 2
    wait_until(lambda: {b["name"]: b["up"] for b in status(gateway)["backends"]}["anvil"] is False)

    # A fallback answers for the model that has one, under the name asked for.
    parts = list(api.chat(model="qwen3.5:27b", messages=[{"role": "user", "content": "x"}], stream=True))
    assert "".join(p.message.content for p in parts).startswith("[forge]") and parts[0].model == "qwen3.5:27b"
    # The fine-tuned model pauses: 503, Retry-After, what is down.
    paused = httpx.post(gateway.url + "/api/chat", headers=AUTH,
                        json={"model": "alaiml-task", "messages": [{"role": "user", "content": "hi"}]})
    assert paused.status_code == 503 and paused.headers["retry-after"] == "7"
    assert "paused" in paused.json()["error"] and "anvil" in paused.json()["error"]
    paused_openai = httpx.post(gateway.url + "/v1/chat/completions", headers=AUTH,
                               json={"model": "alaiml-task", "messages": [{"role": "user", "content": "hi"}]})
    assert paused_openai.status_code == 503 and paused_openai.headers["retry-after"] == "7"
    assert paused_openai.json()["error"]["code"] == "model_paused"
    # A model only anvil had is paused too, not "not found".
    with pytest.raises(ollama.ResponseError) as only_anvil:
        api.embed(model="bge-m3", input="x")
    assert only_anvil.value.status_code == 503
    assert status(gateway)["models"]["alaiml-task"]["state"] == "paused"
    # A model whose fallback is the cloud: answered by Together, translated, streamed.
    parts = list(api.chat(model="orchestrator", messages=[{"role": "user", "content": "cloud"}], stream=True))
    assert "".join(p.message.content for p in parts) == "[together] echo: cloud" and parts[-1].done
    shown = run_cli("gateway", "status", env=cli_env(gateway))
    assert shown.returncode == 1 and re.search(r"anvil\s+ollama\s+down", shown.stdout)
    assert re.search(r"alaiml-task\s+paused", shown.stdout) and re.search(r"qwen3\.5:27b\s+→ forge as", shown.stdout)

    # A client that chooses to wait gets its answer once anvil is back.
    threading.Timer(1.0, anvil.start).start()
    started = time.monotonic()
    waited = httpx.post(gateway.url + "/api/chat", headers={**AUTH, "X-Alai-Wait-Seconds": "20"}, timeout=30,
                        json={"model": "alaiml-task", "stream": False,
                              "messages": [{"role": "user", "content": "back?"}]})
    assert waited.status_code == 200, waited.text
    assert waited.json()["message"]["content"] == "[anvil] echo: back?" and time.monotonic() - started >= 0.9
    wait_until(lambda: chat_text(api, "qwen3.5:27b", "again", stream=False).startswith("[anvil]"), 10)


def test_a_failure_mid_stream_is_reported_not_a_clean_end(gateway, api):
    answer = httpx.post(gateway.url + "/api/chat", headers=AUTH,
                        json={"model": "qwen3.5:27b", "messages": [{"role": "user", "content": "fail-midway now"}]})
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert answer.status_code == 200 and "error" in lines[-1] and not any(line.get("done") for line in lines)
    with pytest.raises(ollama.ResponseError):
        chat_text(api, "qwen3.5:27b", "fail-midway again", stream=True)


def test_a_client_that_hangs_up_mid_stream_stops_the_model(gateway, fakes):
    # The answer takes ~1 s upstream (a word every 2 ms); the client leaves after two lines.
    anvil = fakes[0]

    def counts() -> dict:
        return httpx.get(anvil.url + "/_fake/streams").json()

    before = counts()
    prompt = " ".join(f"w{i}" for i in range(500))
    with httpx.Client(base_url=gateway.url, headers=AUTH, timeout=10) as client:
        with client.stream("POST", "/api/chat", json={"model": "qwen3.5:27b", "messages": [
                {"role": "user", "content": prompt}]}) as response:
            lines = response.iter_lines()
            assert json.loads(next(lines))["message"]["content"].startswith("[anvil]")
            next(lines)
    wait_until(lambda: counts()["abandoned"] == before["abandoned"] + 1, timeout=3)
    assert counts()["finished"] == before["finished"]


def test_an_openai_compatible_backend_answers_ollama_requests(gateway, api):
    assert {"llama-70b", "cloud-embed"} <= {model.model for model in api.list().models}
    parts = list(api.chat(model="llama-70b", messages=[{"role": "user", "content": "from the cloud"}], stream=True))
    assert "".join(p.message.content for p in parts) == "[together] echo: from the cloud"
    assert all(p.model == "llama-70b" for p in parts) and parts[-1].done and parts[-1].eval_count == 5
    whole = api.chat(model="llama-70b", messages=[{"role": "user", "content": "whole"}], options={"temperature": 0})
    assert whole.message.content == "[together] echo: whole" and whole.done_reason == "stop"
    assert api.generate(model="llama-70b", prompt="gen").response == "[together] echo: gen"
    assert len(api.embed(model="cloud-embed", input=["a", "b"]).embeddings) == 2
    # Tool calls, both ways: the model asks for a tool; the answer goes back with the call's id.
    weather = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                                "parameters": {"type": "object", "properties": {
                                                    "city": {"type": "string"}}, "required": ["city"]}}}
    asked = [{"role": "user", "content": "what is the weather in Paris?"}]
    for stream in (False, True):
        if stream:
            parts = list(api.chat(model="llama-70b", messages=asked, tools=[weather], stream=True))
            calls = [call for part in parts for call in (part.message.tool_calls or [])]
            assert parts[-1].done
        else:
            calls = api.chat(model="llama-70b", messages=asked, tools=[weather]).message.tool_calls
        assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    follow_up = api.chat(model="llama-70b", tools=[weather], messages=[
        *asked, {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18 degrees, sunny"}, {"role": "user", "content": "thanks"}])
    assert follow_up.message.content == "[together] echo: thanks"
    refused = httpx.post(gateway.url + "/api/chat", headers=AUTH,
                         json={"model": "wrong-key", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 503 and "refused the gateway's credentials" in refused.json()["error"]
    assert "not-the-key" not in refused.text


def test_the_openai_client_works_through_the_gateway(gateway, database_url):
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=TOKEN)  # the bearer token as the API key
    try:
        ids = {model.id for model in client.models.list()}
        assert {"qwen3.5:27b", "devstral:24b", LLAMA, "llama-70b", "orchestrator"} <= ids
        whole = client.chat.completions.create(model="qwen3.5:27b", messages=[{"role": "user", "content": "hi"}])
        assert whole.choices[0].message.content == "[anvil] echo: hi" and whole.model == "qwen3.5:27b"
        chunks = list(client.chat.completions.create(model="llama-70b", stream=True,
                                                     messages=[{"role": "user", "content": "stream me"}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "[together] echo: stream me"
        assert all(c.model == "llama-70b" for c in chunks)  # renamed back from the upstream name
        assert all(c.choices for c in chunks)  # the usage chunk the gateway asked for is not passed on
        asked = list(client.chat.completions.create(model="llama-70b", stream=True, stream_options={
            "include_usage": True}, messages=[{"role": "user", "content": "count me"}]))
        assert asked[-1].usage.completion_tokens == 4  # … but it is when the client asks
        assert len(client.embeddings.create(model="cloud-embed", input=["a", "b"]).data) == 2
        httpx.get(gateway.url + "/v1/gateway/usage", headers=AUTH)  # flushes the usage records
        with psycopg.connect(database_url) as conn:
            counted = conn.execute("SELECT tokens_out FROM gateway_usage WHERE surface = 'openai' AND model = "
                                   "'llama-70b' AND first_byte_ms IS NOT NULL ORDER BY id").fetchall()
        assert counted and all(row[0] for row in counted)  # streamed, and still counted
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="no-such", messages=[{"role": "user", "content": "x"}])
        assert missing.value.body["code"] == "model_not_found"
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="", messages=[{"role": "user", "content": "x"}])
    finally:
        client.close()


def test_usage_is_recorded_with_tokens_and_cost(gateway, database_url, tmp_path):
    report = httpx.get(gateway.url + "/v1/gateway/usage", headers=AUTH, params={"by": "backend"}).json()
    rows = {row["key"]: row for row in report["rows"]}
    assert {"anvil", "forge", "together"} <= set(rows)
    assert rows["together"]["tokens_out"] > 0 and rows["together"]["cost_usd"] > 0
    assert rows["anvil"]["tokens_in"] > 0 and rows["anvil"]["cost_usd"] == 0  # no price for anvil: free
    assert report["total"]["errors"] > 0  # the 404s, 503s and 502 of the other tests
    with psycopg.connect(database_url) as conn:
        paused = conn.execute("SELECT count(*) FROM gateway_usage WHERE model = 'alaiml-task' AND status = 503"
                              ).fetchone()[0]
        streamed = conn.execute("SELECT count(*) FROM gateway_usage WHERE backend = 'together' AND path = "
                                "'/api/chat' AND first_byte_ms IS NOT NULL AND tokens_out > 0").fetchone()[0]
    assert paused >= 1 and streamed >= 1
    shown = run_cli("gateway", "usage", "--by", "model", "--since", "1d", env=cli_env(gateway))
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"llama-70b\s+\d+\s+\d+\s+[\d,]+\s+[\d,]+\s+\$0\.\d{4}", shown.stdout)
    assert re.search(r"total\s+[\d,]+", shown.stdout)

    created = subprocess.run([sys.executable, "-m", "alai", "admin", "token", "create", "--name", "script",
                              "--scopes", "gateway:use", "--json"], capture_output=True, text=True, timeout=60,
                             env={"ALAI_DATABASE_URL": database_url, "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert created.returncode == 0, created.stderr
    script = {"Authorization": f"Bearer {json.loads(created.stdout)['token']}"}
    assert httpx.post(gateway.url + "/api/generate", headers=script,
                      json={"model": "devstral:24b", "prompt": "mine", "stream": False}).status_code == 200
    own = httpx.get(gateway.url + "/v1/gateway/usage", headers=script, params={"by": "principal"}).json()
    assert [row["key"] for row in own["rows"]] == ["script"] and own["rows"][0]["requests"] == 1
    others = httpx.get(gateway.url + "/v1/gateway/usage", headers=script, params={"principal": "admin-token"})
    assert others.status_code == 403


def test_the_anthropic_client_works_through_the_gateway(gateway):
    client = anthropic.Anthropic(base_url=gateway.url, auth_token=TOKEN)  # Authorization: Bearer
    try:
        user = [{"role": "user", "content": "hello claude"}]
        native = client.messages.create(model="claude-sonnet", max_tokens=100, messages=user)
        assert native.content[0].text == "[claude] echo: hello claude" and native.model == "claude-sonnet"
        assert native.usage.output_tokens == 4 and native.stop_reason == "end_turn"
        with client.messages.stream(model="claude-sonnet", max_tokens=100, messages=user) as stream:
            assert "".join(stream.text_stream) == "[claude] echo: hello claude"
            assert stream.get_final_message().model == "claude-sonnet"
        # Answered by an OpenAI-compatible backend and by Ollama, translated both ways, streaming too.
        cloud = client.messages.create(model="llama-70b", max_tokens=50, system="be brief",
                                       messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
        assert cloud.content[0].text == "[together] echo: hi" and cloud.model == "llama-70b"
        with client.messages.stream(model="llama-70b", max_tokens=50, messages=user) as stream:
            assert "".join(stream.text_stream) == "[together] echo: hello claude"
            final = stream.get_final_message()
        assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4
        # Tool use, translated for an OpenAI-compatible backend: the call comes back as a tool_use
        # block, and the tool_result goes back with its id.
        tool = {"name": "get_weather", "description": "Weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
        asked = [{"role": "user", "content": "what is the weather in Paris?"}]
        called = client.messages.create(model="llama-70b", max_tokens=50, tools=[tool], messages=asked)
        uses = [block for block in called.content if block.type == "tool_use"]
        assert called.stop_reason == "tool_use" and [(u.name, u.input) for u in uses] == [
            ("get_weather", {"city": "Paris"})]
        with client.messages.stream(model="llama-70b", max_tokens=50, tools=[tool], messages=asked) as stream:
            streamed = stream.get_final_message()
        assert [(b.name, b.input) for b in streamed.content if b.type == "tool_use"] == [
            ("get_weather", {"city": "Paris"})]
        answered = client.messages.create(model="llama-70b", max_tokens=50, tools=[tool], messages=[
            *asked, {"role": "assistant", "content": [{"type": "tool_use", "id": uses[0].id, "name": "get_weather",
                                                      "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 C"},
                                         {"type": "text", "text": "thanks"}]}])
        assert answered.content[0].text == "[together] echo: thanks"
        local = client.messages.create(model="qwen3.5:27b", max_tokens=50, messages=user)
        assert local.content[0].text == "[anvil] echo: hello claude"
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(model="no-such", max_tokens=10, messages=user)
    finally:
        client.close()
    # And the other way: Ollama and OpenAI requests answered by the Anthropic backend.
    ollama_client = ollama.Client(host=gateway.url, headers=AUTH)
    try:
        assert chat_text(ollama_client, "claude-sonnet", "via ollama", stream=True) == "[claude] echo: via ollama"
        whole = ollama_client.chat(model="claude-sonnet", messages=[{"role": "user", "content": "x y"}])
        assert whole.message.content == "[claude] echo: x y" and whole.eval_count == 4
    finally:
        ollama_client._client.close()
    openai_client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=TOKEN)
    try:
        answer = openai_client.chat.completions.create(
            model="claude-sonnet", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "oa"}])
        assert answer.choices[0].message.content == "[claude] echo: oa" and answer.usage.completion_tokens == 3
        chunks = list(openai_client.chat.completions.create(model="claude-sonnet", stream=True,
                                                            messages=[{"role": "user", "content": "sse"}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "[claude] echo: sse"
        # Tools toward the Anthropic backend, whole and streamed, and the answer back with its id.
        function = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
        asked = [{"role": "user", "content": "weather in Paris?"}]
        called = openai_client.chat.completions.create(model="claude-sonnet", messages=asked, tools=[function])
        call = called.choices[0].message.tool_calls[0]
        assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
        assert called.choices[0].finish_reason == "tool_calls"
        pieces = list(openai_client.chat.completions.create(model="claude-sonnet", messages=asked, tools=[function],
                                                            stream=True))
        fragments = [t for c in pieces if c.choices for t in (c.choices[0].delta.tool_calls or [])]
        assert fragments[0].function.name == "get_weather"
        assert json.loads("".join(f.function.arguments or "" for f in fragments)) == {"city": "Paris"}
        followed = openai_client.chat.completions.create(model="claude-sonnet", tools=[function], messages=[
            *asked, {"role": "assistant", "content": None, "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": call.id, "content": "18 C"}, {"role": "user", "content": "merci"}])
        assert followed.choices[0].message.content == "[claude] echo: merci"
    finally:
        openai_client.close()
    missing = httpx.post(gateway.url + "/v1/messages", headers=AUTH, json={"model": "claude-sonnet", "messages": user})
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in missing.json()["error"]["message"]
