"""`alai start`: the local proxy that lets Ollama scripts and clients work unchanged, with
no token of their own, through the control plane's gateway."""

import socket

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.fakes.ollama import FakeOllamaProcess
from tests.support.processes import free_port, run_cli, start_serve

pytestmark = pytest.mark.e2e
TOKEN = "start-token"


@pytest.fixture(scope="module")
def anvil():
    fake = FakeOllamaProcess("anvil", ["qwen3.5:27b", "bge-m3:latest"])
    fake.start()
    yield fake
    fake.kill()


@pytest.fixture(scope="module")
def server(anvil, database_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("start-server")
    config = base / "gateway.yaml"
    config.write_text(f'backends: [{{name: anvil, kind: ollama, url: "{anvil.url}"}}]\n')
    process = start_serve(env={"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": TOKEN,
                               "ALAI_DATA_DIR": str(base / "data"), "ALAI_GATEWAY_CONFIG": str(config)},
                          log_path=base / "serve.log")
    process.wait_ready()
    yield process
    process.process.terminate()
    process.process.wait(30)


@pytest.fixture
def cli_env(server, tmp_path):
    return {"HOME": str(tmp_path), "ALAI_CONFIG_DIR": str(tmp_path / "config"), "ALAI_SERVER": server.url,
            "ALAI_TOKEN": TOKEN, "ALAI_KEYRING": "off"}


def test_scripts_without_a_token_work_through_the_local_proxy(cli_env):
    port = free_port()
    started = run_cli("start", "--port", str(port), env=cli_env)
    try:
        assert started.returncode == 0, started.stderr
        assert f"http://127.0.0.1:{port}" in started.stdout
        plain = ollama.Client(host=f"http://127.0.0.1:{port}")  # what the 306 scripts do: no token
        try:
            assert "qwen3.5:27b" in {model.model for model in plain.list().models}
            streamed = "".join(part.message.content for part in plain.chat(
                model="qwen3.5:27b", messages=[{"role": "user", "content": "from a script"}], stream=True))
            assert streamed == "[anvil] echo: from a script"
            assert plain.embed(model="bge-m3", input="x").embeddings
            with pytest.raises(ollama.ResponseError) as missing:
                plain.chat(model="nope", messages=[{"role": "user", "content": "hi"}])
            assert missing.value.status_code == 404
        finally:
            plain._client.close()
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "Ollama is running"
        # OpenAI-style tools pointed at the proxy: whatever key they send, the login's token goes on.
        compatible = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="ollama")
        try:
            answer = compatible.chat.completions.create(model="qwen3.5:27b",
                                                        messages=[{"role": "user", "content": "oai"}])
            assert answer.choices[0].message.content == "[anvil] echo: oai"
        finally:
            compatible.close()
        claude_style = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="unused")
        try:
            reply = claude_style.messages.create(model="qwen3.5:27b", max_tokens=20,
                                                 messages=[{"role": "user", "content": "msg"}])
            assert reply.content[0].text == "[anvil] echo: msg"
        finally:
            claude_style.close()

        # Only the model APIs, only for this machine: not the identity API, not a page elsewhere.
        base = f"http://127.0.0.1:{port}"
        assert httpx.post(base + "/v1/identity/tokens", json={"name": "x", "scopes": ["admin"]}).status_code == 404
        assert httpx.get(base + "/api/tags", headers={"Host": "rebind.attacker.example"}).status_code == 403
        assert httpx.get(base + "/api/tags", headers={"Origin": "https://evil.example"}).status_code == 403
        assert httpx.get(base + "/api/tags", headers={"Origin": f"http://localhost:{port}"}).status_code == 200

        status = run_cli("start", "--status", env=cli_env)
        assert status.returncode == 0 and "running on" in status.stdout and "requests forwarded" in status.stdout
        again = run_cli("start", "--port", str(port), env=cli_env)
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        stopped = run_cli("start", "--stop", env=cli_env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert run_cli("start", "--status", env=cli_env).returncode == 1
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)


def test_a_taken_port_is_explained(cli_env, anvil):
    # A local Ollama (the fake) on the port: say so, and how to move either one.
    taken = run_cli("start", "--port", str(anvil.port), env=cli_env)
    assert taken.returncode == 1 and len(taken.stderr.strip().splitlines()) == 1
    assert "local Ollama" in taken.stderr and f"--port {anvil.port + 1}" in taken.stderr
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        busy = run_cli("start", "--port", str(port), env=cli_env)
    assert busy.returncode == 1 and "taken by another program" in busy.stderr


def test_without_credentials_it_says_to_log_in(cli_env):
    env = {**cli_env, "ALAI_TOKEN": ""}
    refused = run_cli("start", "--port", str(free_port()), env=env)
    assert refused.returncode == 1 and "alai login" in refused.stderr
