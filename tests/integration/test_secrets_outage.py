"""A Bitwarden backend (the bws fake, a real subprocess) goes down: a cached value is
served marked stale until stale_max_seconds, then 503 with the reason; it comes back."""

import asyncio
import base64
import os
import time

import pytest
from pydantic import SecretStr

from tests.fakes import bws as fake_bws

PROJECT = "8f3e9a4c-1b2d-4c5e-9f60-7a8b9c0d1e2f"


@pytest.fixture
def bws_state(tmp_path):
    token = fake_bws.make_token()
    state = tmp_path / "bws.json"
    fake_bws.write_state(state, {"tokens": [token], "projects": [PROJECT],
                                 "secrets": [fake_bws.secret("together/api-key", "tg-value", PROJECT)]})
    binary = fake_bws.install(tmp_path / "bin", state)
    return state, binary, token


@pytest.fixture
def settings(settings, bws_state, tmp_path):
    state, binary, token = bws_state
    config = tmp_path / "secrets.yaml"
    config.write_text(f"""
cache_ttl_seconds: 0.5
stale_max_seconds: 3
mounts:
  - {{prefix: "", kind: local}}
  - {{prefix: bws, kind: bws, access_token: "{token}", project_id: "{PROJECT}", binary: "{binary}",
     timeout_seconds: 5}}
policies:
  - {{name: everyone-reads, principals: ["*"], actions: [read, list], paths: ["**"]}}
""")
    settings.secrets_config = config
    settings.master_key = SecretStr(base64.b64encode(os.urandom(32)).decode())
    return settings


def set_down(state, down: bool) -> None:
    current = fake_bws.read_state(state)
    current["down"] = down
    fake_bws.write_state(state, current)


async def test_a_down_backend_serves_stale_values_then_503_then_recovers(app, client, bws_state):
    state = bws_state[0]
    fresh = await client.get("/v1/secrets/values/bws/together/api-key")
    assert fresh.status_code == 200 and fresh.json() == {**fresh.json(), "value": "tg-value", "mount": "bws",
                                                          "stale": False}
    mounts = {m["prefix"]: m for m in (await client.get("/v1/secrets/mounts")).json()}
    assert mounts["bws"]["healthy"] is True and mounts[""]["kind"] == "local"

    set_down(state, True)
    await asyncio.sleep(0.6)  # past the cache's TTL: the backend is asked, and is down
    stale = await client.get("/v1/secrets/values/bws/together/api-key")
    assert stale.status_code == 200 and stale.json()["stale"] is True and stale.json()["value"] == "tg-value"
    assert "stale" in stale.headers["warning"]
    mounts = {m["prefix"]: m for m in (await client.get("/v1/secrets/mounts")).json()}
    assert mounts["bws"]["healthy"] is False and mounts["bws"]["detail"]

    missing = await client.get("/v1/secrets/values/bws/never/cached")
    assert missing.status_code == 503 and "bws" in missing.json()["detail"] and missing.headers["retry-after"]

    deadline = time.monotonic() + 10
    while True:  # past stale_max_seconds: the borrowed time is over
        late = await client.get("/v1/secrets/values/bws/together/api-key")
        if late.status_code == 503:
            break
        assert time.monotonic() < deadline, "the stale value was served for too long"
        await asyncio.sleep(0.3)
    assert "unavailable" in late.json()["detail"] and "tg-value" not in late.text

    set_down(state, False)
    deadline = time.monotonic() + 15  # the backend holds off a down CLI for a few seconds
    while (back := await client.get("/v1/secrets/values/bws/together/api-key")).status_code != 200:
        assert time.monotonic() < deadline, back.text
        await asyncio.sleep(0.3)
    assert back.json()["stale"] is False
    outcomes = [item["outcome"] for item in (await client.get(
        "/v1/secrets/audit", params={"path": "bws/together/api-key", "limit": 1000})).json()["items"]]
    assert {"ok", "stale", "error"} <= set(outcomes)
