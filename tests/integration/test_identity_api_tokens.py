"""API tokens: created once, stored hashed, scoped, revocable, with last-used time."""

import hashlib

import psycopg

from alai.server.identity import credentials


async def test_create_use_and_revoke(client, anonymous_client, database_url):
    created = await client.post("/v1/identity/tokens", json={"name": "forge-node", "scopes": ["node", "runs:claim"],
                                                              "expires_in_days": 90})
    assert created.status_code == 201, created.text
    body = created.json()
    token = body["token"]
    assert token.startswith(credentials.API_TOKEN_PREFIX) and body["prefix"] == token[:12]
    assert sorted(body["scopes"]) == ["node", "profile", "runs:claim"]
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("SELECT token_hash FROM identity_api_tokens WHERE id = %s", (body["id"],)).fetchone()[0]
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored

    auth = {"Authorization": f"Bearer {token}"}
    me = await anonymous_client.get("/v1/identity/me", headers=auth)
    assert me.status_code == 200 and me.json()["kind"] == "api-token" and me.json()["name"] == "forge-node"
    forbidden = await anonymous_client.get("/v1/identity/tokens", headers=auth)
    assert forbidden.status_code == 403 and "admin" in forbidden.json()["detail"]

    listed = (await client.get("/v1/identity/tokens")).json()
    mine = next(t for t in listed if t["id"] == body["id"])
    assert "token" not in mine and mine["last_used_at"] is not None

    revoked = await client.delete(f"/v1/identity/tokens/{body['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    after = await anonymous_client.get("/v1/identity/me", headers=auth)
    assert after.status_code == 401


async def test_expired_tokens_do_not_work(client, anonymous_client, database_url):
    body = (await client.post("/v1/identity/tokens", json={"name": "short", "scopes": ["mc:read"]})).json()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE identity_api_tokens SET expires_at = now() - interval '1 second' WHERE id = %s",
                      (body["id"],))
    response = await anonymous_client.get("/v1/identity/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert response.status_code == 401


async def test_bad_requests_are_4xx(client):
    assert (await client.post("/v1/identity/tokens", json={"name": "has space", "scopes": ["x"]})).status_code == 422
    assert (await client.post("/v1/identity/tokens", json={"name": "ok", "scopes": []})).status_code == 422
    assert (await client.delete("/v1/identity/tokens/not-a-uuid")).status_code == 404
    assert (await client.delete("/v1/identity/tokens/00000000-0000-0000-0000-000000000000")).status_code == 404
