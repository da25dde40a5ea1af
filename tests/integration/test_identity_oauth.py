"""The built-in issuer: PKCE code flow, refresh rotation, and the attacks it must refuse."""


import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from alai.server.identity import service
from tests.support.oauth import at_run_time, authorize_params, pkce_pair, query_of, sign_in

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def alice(app):
    async with app.state.pool.connection() as conn:
        try:
            return await service.create_user(conn, username="alice", password=PASSWORD, email="alice@example.com",
                                             display_name="Alice")
        except Exception:
            return next(u for u in await service.list_users(conn) if u.username == "alice")


async def login(http: httpx.AsyncClient, *, verifier=None, challenge=None, **overrides):
    """A whole sign-in; returns (token response, params)."""
    if verifier is None:
        verifier, challenge = pkce_pair()
    params = authorize_params(challenge, **overrides)
    response = await sign_in(http, params, "alice", PASSWORD)
    assert response.status_code == 302, response.text
    query = query_of(response.headers["location"])
    tokens = await http.post("/oauth/token", data={
        "grant_type": "authorization_code", "client_id": "alai-cli", "code": query["code"],
        "redirect_uri": params["redirect_uri"], "code_verifier": verifier,
    })
    return tokens, params, query


async def test_discovery_and_jwks(anonymous_client):
    document = (await anonymous_client.get("/.well-known/openid-configuration")).json()
    assert document["issuer"] == "http://alai.test"
    assert document["code_challenge_methods_supported"] == ["S256"]
    keys = (await anonymous_client.get("/.well-known/jwks.json")).json()["keys"]
    assert keys and all(k["kty"] == "RSA" and "d" not in k for k in keys)
    config = (await anonymous_client.get("/.well-known/alai-login")).json()
    assert config["mode"] == "builtin" and config["client_id"] == "alai-cli"


async def test_full_code_flow_gives_tokens_that_work(anonymous_client, alice):
    tokens, params, query = await login(anonymous_client)
    assert tokens.status_code == 200, tokens.text
    assert tokens.headers["cache-control"] == "no-store"
    body = tokens.json()
    assert query["state"] == params["state"] and query["iss"] == "http://alai.test"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900 and body["refresh_token"]
    id_claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert id_claims["nonce"] == params["nonce"] and id_claims["aud"] == "alai-cli"
    me = await anonymous_client.get("/v1/identity/me", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200
    assert me.json()["name"] == "alice@example.com" and "mc:write" in me.json()["scopes"]
    assert "admin" not in me.json()["scopes"]
    status = await anonymous_client.get("/v1/status", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert status.status_code == 200  # ops:read is a user scope


async def test_wrong_password_shows_the_form_again(anonymous_client, alice):
    verifier, challenge = pkce_pair()
    response = await sign_in(anonymous_client, authorize_params(challenge), "alice", "wrong")
    assert response.status_code == 401
    assert "Wrong username or password" in response.text and "location" not in response.headers


async def test_pkce_wrong_verifier_is_refused(anonymous_client, alice):
    verifier, challenge = pkce_pair()
    other_verifier, _ = pkce_pair()
    tokens, _, _ = await login(anonymous_client, verifier=other_verifier, challenge=challenge)
    assert tokens.status_code == 400 and tokens.json()["error"] == "invalid_grant"
    assert "PKCE" in tokens.json()["error_description"]


@pytest.mark.parametrize("method", ["plain", None])
async def test_pkce_plain_or_missing_method_is_refused(anonymous_client, alice, method):
    _, challenge = pkce_pair()
    page = await anonymous_client.get("/oauth/authorize", params=authorize_params(challenge, code_challenge_method=method))
    assert page.status_code == 302
    query = query_of(page.headers["location"])
    assert query["error"] == "invalid_request" and "S256" in query["error_description"]


async def test_redirect_uri_mismatch_shows_an_error_page_and_never_redirects(anonymous_client, alice):
    _, challenge = pkce_pair()
    for bad in ("https://evil.example.com/callback", "http://localhost:5000/other", "http://evil.com:80/callback",
                "http://localhost.evil.com/callback"):
        page = await anonymous_client.get("/oauth/authorize", params=authorize_params(challenge, redirect_uri=bad))
        assert page.status_code == 400 and "location" not in page.headers, bad
        assert "not registered" in page.text
    unknown = await anonymous_client.get("/oauth/authorize", params=authorize_params(challenge, client_id="nope"))
    assert unknown.status_code == 400


async def test_loopback_redirects_on_any_port_are_allowed(anonymous_client, alice):
    _, challenge = pkce_pair()
    for uri in ("http://localhost:1234/callback", "http://127.0.0.1:65000/callback"):
        page = await anonymous_client.get("/oauth/authorize", params=authorize_params(challenge, redirect_uri=uri))
        assert page.status_code == 200, uri


async def test_token_exchange_with_another_redirect_uri_is_refused(anonymous_client, alice):
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge)
    query = query_of((await sign_in(anonymous_client, params, "alice", PASSWORD)).headers["location"])
    tokens = await anonymous_client.post("/oauth/token", data={
        "grant_type": "authorization_code", "client_id": "alai-cli", "code": query["code"],
        "redirect_uri": "http://localhost:1/callback", "code_verifier": verifier})
    assert tokens.status_code == 400 and "redirect_uri" in tokens.json()["error_description"]


async def test_reused_code_is_refused_and_revokes_what_it_gave(anonymous_client, alice):
    verifier, challenge = pkce_pair()
    params = authorize_params(challenge)
    query = query_of((await sign_in(anonymous_client, params, "alice", PASSWORD)).headers["location"])
    form = {"grant_type": "authorization_code", "client_id": "alai-cli", "code": query["code"],
            "redirect_uri": params["redirect_uri"], "code_verifier": verifier}
    first = await anonymous_client.post("/oauth/token", data=form)
    assert first.status_code == 200
    second = await anonymous_client.post("/oauth/token", data=form)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    refreshed = await anonymous_client.post("/oauth/token", data={
        "grant_type": "refresh_token", "client_id": "alai-cli", "refresh_token": first.json()["refresh_token"]})
    assert refreshed.status_code == 400 and "revoked" in refreshed.json()["error_description"]


async def test_refresh_rotates_and_reuse_revokes_the_family(anonymous_client, alice, database_url):
    tokens, _, _ = await login(anonymous_client)
    first_refresh = tokens.json()["refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": "alai-cli", "refresh_token": first_refresh}
    rotated = await anonymous_client.post("/oauth/token", data=form)
    assert rotated.status_code == 200
    second_refresh = rotated.json()["refresh_token"]
    assert second_refresh != first_refresh
    # Later than the grace period for racing clients, the old token comes back: theft.
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE identity_refresh_tokens SET used_at = used_at - interval '1 minute' "
                     "WHERE used_at IS NOT NULL")
    reused = await anonymous_client.post("/oauth/token", data=form)
    assert reused.status_code == 400 and "reuse detected" in reused.json()["error_description"]
    # The thief's reuse ended the session: the legitimate latest token is dead too.
    latest = await anonymous_client.post("/oauth/token", data={**form, "refresh_token": second_refresh})
    assert latest.status_code == 400 and latest.json()["error"] == "invalid_grant"


async def test_two_clients_racing_with_one_refresh_token_keep_the_session(anonymous_client, alice):
    import asyncio

    tokens, _, _ = await login(anonymous_client)
    form = {"grant_type": "refresh_token", "client_id": "alai-cli", "refresh_token": tokens.json()["refresh_token"]}
    results = await asyncio.gather(*[anonymous_client.post("/oauth/token", data=form) for _ in range(2)])
    assert [r.status_code for r in results] == [200, 200]
    for result in results:  # both successors work: nobody was logged out by the race
        again = await anonymous_client.post("/oauth/token", data={**form,
                                                                  "refresh_token": result.json()["refresh_token"]})
        assert again.status_code == 200


async def test_revocation_endpoint_ends_the_session(anonymous_client, alice):
    tokens, _, _ = await login(anonymous_client)
    refresh = tokens.json()["refresh_token"]
    assert (await anonymous_client.post("/oauth/revoke", data={"token": refresh})).status_code == 200
    after = await anonymous_client.post("/oauth/token", data={
        "grant_type": "refresh_token", "client_id": "alai-cli", "refresh_token": refresh})
    assert after.status_code == 400


async def test_unsupported_grant_and_unknown_client(anonymous_client):
    grant = await anonymous_client.post("/oauth/token", data={"grant_type": "password", "client_id": "alai-cli"})
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"
    client = await anonymous_client.post("/oauth/token", data={"grant_type": "refresh_token", "client_id": "x"})
    assert client.status_code == 401 and client.json()["error"] == "invalid_client"


# -- token attacks --------------------------------------------------------------------


@pytest.fixture
async def valid_token(anonymous_client, alice) -> str:
    tokens, _, _ = await login(anonymous_client)
    return tokens.json()["access_token"]


def _forge(app, claims_update: dict | None = None, *, header_update: dict | None = None, alg: str = "RS256",
           key=None, base: str) -> str:
    claims = jwt.decode(base, options={"verify_signature": False})
    header = jwt.get_unverified_header(base)
    claims.update(claims_update or {})
    header.update(header_update or {})
    signing_key = key if key is not None else app.state.keyring.active.private_key
    return jwt.encode(claims, signing_key, algorithm=alg, headers={k: v for k, v in header.items() if k != "alg"})


async def _me(http, token):
    return await http.get("/v1/identity/me", headers={"Authorization": f"Bearer {token}"})


async def test_valid_token_passes_the_same_checks(anonymous_client, app, valid_token):
    assert (await _me(anonymous_client, valid_token)).status_code == 200
    assert (await _me(anonymous_client, _forge(app, base=valid_token))).status_code == 200  # re-signed, same claims


async def test_alg_none_is_refused(anonymous_client, app, valid_token):
    claims = jwt.decode(valid_token, options={"verify_signature": False})
    header = {k: v for k, v in jwt.get_unverified_header(valid_token).items() if k != "alg"}
    token = jwt.encode(claims, None, algorithm="none", headers=header)
    assert jwt.get_unverified_header(token)["alg"] == "none"
    assert (await _me(anonymous_client, token)).status_code == 401


async def test_hs256_signed_with_the_public_key_is_refused(anonymous_client, app, valid_token):
    public_pem = app.state.keyring.active.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = {**jwt.get_unverified_header(valid_token), "alg": "HS256"}
    claims = jwt.decode(valid_token, options={"verify_signature": False})
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    assert (await _me(anonymous_client, f"{signing_input}.{b64(signature)}")).status_code == 401


@pytest.mark.parametrize("change", [
    {"exp": -120},  # seconds from now: see at_run_time
    {"nbf": 600},
    {"iss": "http://evil.test"},
    {"aud": "someone-else"},
])
async def test_bad_claims_are_refused(anonymous_client, app, valid_token, change):
    response = await _me(anonymous_client, _forge(app, at_run_time(change), base=valid_token))
    assert response.status_code == 401


async def test_unknown_kid_is_refused(anonymous_client, app, valid_token):
    forged = _forge(app, header_update={"kid": "not-a-key"}, base=valid_token)
    assert (await _me(anonymous_client, forged)).status_code == 401


async def test_tampered_payload_is_refused(anonymous_client, valid_token):
    header, payload, signature = valid_token.split(".")
    import base64
    import json

    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] += " admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert (await _me(anonymous_client, f"{header}.{forged_payload}.{signature}")).status_code == 401


async def test_id_token_is_not_accepted_as_an_access_token(anonymous_client, alice):
    tokens, _, _ = await login(anonymous_client)
    assert (await _me(anonymous_client, tokens.json()["id_token"])).status_code == 401


async def test_key_rotation_keeps_old_tokens_valid(anonymous_client, app, valid_token):
    from alai.server.identity import keys

    old_kid = jwt.get_unverified_header(valid_token)["kid"]
    async with app.state.pool.connection() as conn:
        async with conn.transaction():
            new_kid = await keys.rotate(conn)
        await app.state.keyring.reload(conn)
    assert (await _me(anonymous_client, valid_token)).status_code == 200
    published = {k["kid"] for k in (await anonymous_client.get("/.well-known/jwks.json")).json()["keys"]}
    assert {old_kid, new_kid} <= published
    tokens, _, _ = await login(anonymous_client)
    assert jwt.get_unverified_header(tokens.json()["access_token"])["kid"] == new_kid


async def test_failed_sign_ins_are_throttled_per_username(anonymous_client, alice):
    _, challenge = pkce_pair()
    params = authorize_params(challenge)
    statuses = [(await sign_in(anonymous_client, params, "alice", f"wrong-{n}")).status_code for n in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    blocked = await sign_in(anonymous_client, params, "alice", PASSWORD)  # even the right password waits
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in blocked.text

