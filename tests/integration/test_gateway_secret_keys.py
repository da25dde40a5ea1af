"""A gateway backend's API key given as secret://path comes from the secrets module,
and a rotated key is picked up."""

import asyncio
import base64
import os

import pytest
from pydantic import SecretStr

from tests.fakes.openai_compat import FakeOpenAIProcess

LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


@pytest.fixture(scope="module")
def together():
    fake = FakeOpenAIProcess("together", [LLAMA], extra=("--api-key", "tg-right-key"))
    fake.start()
    yield fake
    fake.kill()


@pytest.fixture
def settings(settings, together, tmp_path):
    config = tmp_path / "gateway.yaml"
    config.write_text(f"""
backends:
  - {{name: together, kind: openai, url: "{together.url}", api_key: "secret://providers/together"}}
models:
  llama:
    routes: [{{backend: together, model: "{LLAMA}"}}]
""")
    settings.gateway_config = config
    settings.master_key = SecretStr(base64.b64encode(os.urandom(32)).decode())
    return settings


async def test_the_key_is_read_from_the_secrets_module(app, client, caplog):
    body = {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    before = await client.post("/api/chat", json=body)
    assert before.status_code >= 400  # no key yet: the fake refuses the call
    await client.put("/v1/secrets/values/providers/together", json={"value": "tg-right-key"})

    async def answered():
        response = await client.post("/api/chat", json=body)
        return response if response.status_code == 200 else None

    deadline = asyncio.get_running_loop().time() + 15
    response = None
    while response is None:
        assert asyncio.get_running_loop().time() < deadline, "the key was never picked up"
        response = await answered()
        await asyncio.sleep(0.2)
    assert "[together] echo: hi" in response.json()["message"]["content"]
    assert "tg-right-key" not in caplog.text
    config = (await client.get("/v1/gateway/config")).json()
    assert config["backends"][0]["api_key_set"] is True
