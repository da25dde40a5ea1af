"""The secrets API in process, on the local encrypted store: values, policies (every
allow/deny combination), audit, bad input, and a canary value that must never leak."""

import base64
import itertools
import os

import httpx
import pytest
from pydantic import SecretStr

CANARY = "canary-Zq7uX4-never-log-me"


@pytest.fixture
def settings(settings):
    settings.master_key = SecretStr(base64.b64encode(os.urandom(32)).decode())
    return settings


async def token_client(app, client, name, scopes):
    made = await client.post("/v1/identity/tokens", json={"name": name, "scopes": scopes})
    assert made.status_code == 201, made.text
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alai.test",
                             headers={"Authorization": f"Bearer {made.json()['token']}"})


async def test_values_round_trip_and_are_encrypted_at_rest(app, client):
    value = "pässwörd\nwith lines\tand tabs"
    put = await client.put("/v1/secrets/values/together/api-key", json={"value": value})
    assert put.status_code == 200 and put.json()["path"] == "together/api-key"
    got = await client.get("/v1/secrets/values/together/api-key")
    assert got.json()["value"] == value and got.json()["stale"] is False
    assert got.headers["cache-control"] == "no-store"
    assert (await client.get("/v1/secrets/values/secret://together/api-key")).json()["value"] == value
    listed = (await client.get("/v1/secrets/values", params={"prefix": "together"})).json()
    assert [entry["path"] for entry in listed] == ["together/api-key"]
    async with app.state.pool.connection() as conn:
        row = await (await conn.execute("SELECT ciphertext FROM secret_values WHERE path = 'together/api-key'")
                     ).fetchone()
    assert value.encode() not in bytes(row["ciphertext"])
    resolved = await client.post("/v1/secrets/resolve", json={"references": ["secret://together/api-key"]})
    assert resolved.json()["values"] == {"secret://together/api-key": value}
    assert (await client.delete("/v1/secrets/values/together/api-key")).status_code == 204
    assert (await client.get("/v1/secrets/values/together/api-key")).status_code == 404
    mounts = (await client.get("/v1/secrets/mounts")).json()
    assert mounts == [{"prefix": "", "kind": "local", "read_only": False, "healthy": True, "detail": None}]


ACTIONS = ("read", "list", "write", "delete")


async def test_every_allow_and_deny_combination_for_a_token(app, client):
    await client.put("/v1/secrets/values/team/a", json={"value": "A"})
    await client.put("/v1/secrets/values/other/b", json={"value": "B"})
    caller = await token_client(app, client, "ci-bot", ["secrets:read", "secrets:write"])
    try:
        for granted in itertools.chain.from_iterable(itertools.combinations(ACTIONS, n) for n in range(5)):
            if granted:
                saved = await client.put("/v1/secrets/policies/bot", json={
                    "principals": ["token:ci-bot"], "actions": list(granted), "paths": ["team/*"]})
                assert saved.status_code == 200, saved.text
            else:
                await client.delete("/v1/secrets/policies/bot")
            await client.put("/v1/secrets/values/team/a", json={"value": "A"})  # (re)made by the admin
            outcomes = {
                "read": (await caller.get("/v1/secrets/values/team/a")).status_code,
                "list": [e["path"] for e in (await caller.get("/v1/secrets/values", params={"prefix": "team"})).json()],
                "write": (await caller.put("/v1/secrets/values/team/a", json={"value": "A2"})).status_code,
                "delete": (await caller.delete("/v1/secrets/values/team/a")).status_code,
            }
            assert outcomes["read"] == (200 if "read" in granted else 403), granted
            assert outcomes["list"] == (["team/a"] if "list" in granted else []), granted
            assert outcomes["write"] == (200 if "write" in granted else 403), granted
            assert outcomes["delete"] == (204 if "delete" in granted else 403), granted
            # Never outside the policy's paths, whatever it grants.
            assert (await caller.get("/v1/secrets/values/other/b")).status_code == 403
            assert (await caller.put("/v1/secrets/values/other/b", json={"value": "x"})).status_code == 403
    finally:
        await caller.aclose()
    denied = (await client.get("/v1/secrets/audit", params={"principal": "ci-bot", "outcome": "denied"})).json()
    assert denied["items"] and all("no policy lets ci-bot" in item["detail"] for item in denied["items"])


async def test_scopes_principal_patterns_and_globs(app, client):
    from alai.server.deps import Principal
    from alai.server.secrets import policy

    rules = [policy.Rule("r", ("user:alice", "node:*"), frozenset({"read"}), ("agents/**", "shared/*"))]
    alice = Principal(subject="u1", kind="user", scopes=frozenset(), name="alice")
    bob = Principal(subject="u2", kind="user", scopes=frozenset(), name="bob")
    node = Principal(subject="token:9", kind="api-token", scopes=frozenset({"node"}), name="anvil")
    script = Principal(subject="token:8", kind="api-token", scopes=frozenset({"secrets:read"}), name="script")
    agent = Principal(subject="agent:tasker", kind="agent", scopes=frozenset({"secrets:read"}), name="tasker",
                      secret_paths=("together/*",))
    assert policy.decide(rules, alice, "read", "agents/tasker/key") is None
    assert policy.decide(rules, alice, "read", "agents") is not None  # ** needs the agents/ segment
    assert policy.decide(rules, alice, "read", "shared/x") is None
    assert policy.decide(rules, alice, "read", "shared/x/y") is not None  # * stays in one segment
    assert policy.decide(rules, alice, "write", "shared/x") is not None
    assert policy.decide(rules, bob, "read", "shared/x") is not None
    assert policy.decide(rules, node, "read", "shared/x") is None
    assert policy.decide(rules, script, "read", "shared/x") is not None
    # An agent reads what its definition lists, and nothing a policy would add.
    assert policy.decide(rules, agent, "read", "together/api-key") is None
    assert policy.decide(rules + [policy.Rule("all", ("*",), frozenset(ACTIONS), ("**",))], agent, "read",
                         "shared/x") is not None
    assert policy.decide(rules, agent, "write", "together/api-key") is not None

    no_scope = await token_client(app, client, "no-scope", ["mc:read"])
    try:
        assert (await no_scope.get("/v1/secrets/values/x")).status_code == 403
        assert (await no_scope.get("/v1/secrets/audit")).status_code == 403
        assert (await no_scope.get("/v1/secrets/policies")).status_code == 403
    finally:
        await no_scope.aclose()


async def test_bad_input_is_a_clear_4xx(client):
    cases = [
        (lambda: client.put("/v1/secrets/values/bad path", json={"value": "x"}), 422),
        (lambda: client.put("/v1/secrets/values/a//b", json={"value": "x"}), 422),
        (lambda: client.put("/v1/secrets/values/a/%2E%2E/b", json={"value": "x"}), 422),
        (lambda: client.put("/v1/secrets/values/a/b", json={"value": ""}), 422),
        (lambda: client.put("/v1/secrets/values/a/b", json={"value": "x" * (64 * 1024 + 1)}), 413),
        (lambda: client.put("/v1/secrets/values/a/b", json={}), 422),
        (lambda: client.post("/v1/secrets/resolve", json={"references": []}), 422),
        (lambda: client.post("/v1/secrets/resolve", json={"references": ["secret://missing/one"]}), 404),
        (lambda: client.put("/v1/secrets/policies/p", json={"principals": ["root"], "actions": ["read"], "paths": ["*"]}), 422),
        (lambda: client.put("/v1/secrets/policies/p", json={"principals": ["*"], "actions": ["fly"], "paths": ["*"]}), 422),
        (lambda: client.put("/v1/secrets/policies/p", json={"principals": ["*"], "actions": ["read"], "paths": ["a b"]}), 422),
        (lambda: client.get("/v1/secrets/audit", params={"cursor": "nonsense"}), 400),
    ]
    for request, status in cases:
        response = await request()
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_a_canary_value_never_reaches_logs_errors_metrics_or_the_audit(app, client, capsys, caplog):
    await client.put("/v1/secrets/values/canary/key", json={"value": CANARY})
    seen = [await client.get("/v1/secrets/values/canary/key"),
            await client.put("/v1/secrets/values/canary/key", json={"value": CANARY + "x" * 70000}),
            await client.put("/v1/secrets/values/canary key", json={"value": CANARY}),
            await client.put("/v1/secrets/values/canary/key", json={"value": CANARY, "extra": CANARY}),
            await client.post("/v1/secrets/resolve", json={"references": ["canary/key", "canary/missing"]})]
    assert [r.status_code for r in seen] == [200, 413, 422, 422, 404]
    assert all(CANARY not in r.text for r in seen[1:])  # errors never echo a value
    metrics = await client.get("/metrics")
    audit = await client.get("/v1/secrets/audit", params={"limit": 1000})
    out = capsys.readouterr()
    for text in (metrics.text, audit.text, out.out, out.err, caplog.text):
        assert CANARY not in text
    assert any(item["path"] == "canary/key" and item["outcome"] == "ok" for item in audit.json()["items"])


async def test_without_a_master_key_the_local_store_says_why(app, client, settings):
    app.state.secrets.mounts[0].backend._aead = None  # as if started without ALAI_MASTER_KEY
    response = await client.get("/v1/secrets/values/any/thing")
    assert response.status_code == 503 and "ALAI_MASTER_KEY" in response.json()["detail"]
    assert response.headers["retry-after"] == "30"


async def test_a_run_token_reads_only_what_its_agent_lists(app, client):
    await client.put("/v1/secrets/values/together/api-key", json={"value": "tg"})
    await client.put("/v1/secrets/values/team/db", json={"value": "db-pass"})
    await client.put("/v1/secrets/values/other/x", json={"value": "nope"})
    await client.put("/v1/secrets/policies/everyone", json={"principals": ["*"], "actions": ["read", "list"],
                                                            "paths": ["**"]})  # cannot widen an agent's list
    definition = ("---\nname: deployer\nexecutor: command\ncommand: deploy\nsecrets: [together/*]\n"
                  "env: {DB_PASSWORD: secret://team/db}\n---\nDeploy.\n")
    assert (await client.put("/v1/agents/deployer", json={"definition": definition})).status_code in (200, 201)
    bad = "---\nenv: {DB: plain-value}\n---\nx"
    assert (await client.put("/v1/agents/bad-env", json={"definition": bad})).status_code == 422
    await client.put("/v1/nodes/box", json={"capabilities": ["executor:command", "command:deploy"]})
    run = (await client.post("/v1/runs", json={"agent": "deployer", "input": "go"})).json()
    claims = (await client.post("/v1/nodes/box/claim", json={"wait": 2})).json()
    assert claims[0]["run"]["id"] == run["id"] and claims[0]["agent"]["env"] == {"DB_PASSWORD": "secret://team/db"}
    token = claims[0]["token"]
    assert token
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alai.test",
                                 headers={"Authorization": f"Bearer {token}"}) as agent:
        ok = await agent.post("/v1/secrets/resolve", json={"references": ["secret://together/api-key",
                                                                          "secret://team/db"]})
        assert ok.status_code == 200 and ok.json()["values"]["secret://team/db"] == "db-pass"
        assert (await agent.get("/v1/secrets/values/other/x")).status_code == 403
        assert (await agent.put("/v1/secrets/values/together/api-key", json={"value": "x"})).status_code == 403
        assert (await agent.get("/v1/mc/tasks")).status_code == 403  # a run token is for secrets only
    audit = (await client.get("/v1/secrets/audit", params={"principal": "deployer"})).json()["items"]
    assert {(item["path"], item["outcome"]) for item in audit} >= {("other/x", "denied"), ("team/db", "ok")}
    plain = (await client.put("/v1/agents/plain", json={"definition": "---\nmodel: m\n---\nx"})).json()
    assert plain["secrets"] == [] and plain["env"] == {}
