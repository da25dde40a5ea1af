"""Tokens from an external issuer shaped like Azure AD B2C / Entra External ID (tests/fakes/b2c.py)."""

import asyncio
import time

import httpx
import pytest
from pydantic import SecretStr

from alai.server.app import create_app
from alai.server.identity import external
from alai.server.settings import Settings
from tests.fakes.b2c import FakeB2C
from tests.support.oauth import at_run_time


@pytest.fixture
def b2c():
    with FakeB2C(policy="B2C_1_signin") as fake:
        fake.add_user("ana@alai.dev", "pw-ana-123", name="Ana")
        fake.add_user("boss@alai.dev", "pw-boss-123")
        fake.add_user("mallory@evil.example", "pw-mal-123")
        yield fake


@pytest.fixture
def entra():
    with FakeB2C(flavor="entra") as fake:
        fake.add_user("ana@alai.dev", "pw-ana-123")
        yield fake


def external_settings(database_url, tmp_path, fake: FakeB2C, **extra) -> Settings:
    values = dict(
        database_url=SecretStr(database_url), data_dir=tmp_path, public_url="http://alai.test",
        oidc_authority=fake.authority, oidc_audience=fake.api_audience, oidc_client_id=fake.client_id,
        oidc_scopes=fake.full_scope, oidc_allowed_domains="alai.dev", oidc_admin_emails="boss@alai.dev",
    )
    values.update(extra)
    return Settings(**values)


@pytest.fixture
async def http_for(database_url, tmp_path):
    apps = []

    async def make(fake: FakeB2C, **extra) -> httpx.AsyncClient:
        app = create_app(external_settings(database_url, tmp_path, fake, **extra))
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        apps.append(context)
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alai.test")

    yield make
    for context in apps:
        await context.__aexit__(None, None, None)


async def me(http, token):
    return await http.get("/v1/identity/me", headers={"Authorization": f"Bearer {token}"})


async def test_b2c_token_maps_to_a_local_user(b2c, http_for):
    http = await http_for(b2c, oidc_b2c_policy="B2C_1_signin")
    response = await me(http, b2c.mint_access_token("ana@alai.dev"))
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "ana@alai.dev" and "admin" not in response.json()["scopes"]
    boss = await me(http, b2c.mint_access_token("boss@alai.dev"))
    assert "admin" in boss.json()["scopes"]
    users = (await http.get("/v1/identity/users",
                            headers={"Authorization": f"Bearer {b2c.mint_access_token('boss@alai.dev')}"})).json()
    ana = next(u for u in users if u["email"] == "ana@alai.dev")
    assert ana["external_issuer"] == b2c.issuer
    config = (await http.get("/.well-known/alai-login")).json()
    assert config["mode"] == "external" and config["client_id"] == b2c.client_id
    assert (await http.get("/.well-known/openid-configuration")).status_code == 404  # built-in issuer is off


async def test_entra_external_id_token_is_accepted(entra, http_for):
    http = await http_for(entra)
    response = await me(http, entra.mint_access_token("ana@alai.dev"))
    assert response.status_code == 200, response.text
    assert response.json()["name"] == "ana@alai.dev"


async def test_people_not_allowed_get_403_with_the_reason(b2c, http_for):
    http = await http_for(b2c)
    response = await me(http, b2c.mint_access_token("mallory@evil.example"))
    assert response.status_code == 403
    assert "mallory@evil.example is not allowed" in response.json()["detail"]
    closed = await http_for(b2c, oidc_allowed_domains="")
    nobody = await me(closed, b2c.mint_access_token("ana@alai.dev"))
    assert nobody.status_code == 403 and "ALAI_OIDC_ALLOWED_EMAILS" in nobody.json()["detail"]


@pytest.mark.parametrize("overrides", [
    {"exp": -600},  # seconds from now: see at_run_time
    {"nbf": 600},
    {"iss": "https://evil.b2clogin.com/x/v2.0/"},
    {"aud": "another-api"},
    {"tfp": "B2C_1_other_flow"},
])
async def test_bad_b2c_claims_are_refused(b2c, http_for, overrides):
    http = await http_for(b2c, oidc_b2c_policy="B2C_1_signin")
    assert (await me(http, b2c.mint_access_token("ana@alai.dev", **at_run_time(overrides)))).status_code == 401


async def test_forged_algorithms_are_refused(b2c, http_for):
    http = await http_for(b2c)
    claims = {"iss": b2c.issuer, "aud": b2c.api_audience, "exp": int(time.time()) + 600, "oid": "x",
              "emails": ["ana@alai.dev"]}
    assert (await me(http, b2c.mint(claims, alg="none"))).status_code == 401
    assert (await me(http, b2c.mint(claims, alg="HS256", key=b2c.public_key_pem()))).status_code == 401
    valid = b2c.mint_access_token("ana@alai.dev")
    header, payload, signature = valid.split(".")
    tampered = b2c.mint_access_token("boss@alai.dev").split(".")[1]
    assert (await me(http, f"{header}.{tampered}.{signature}")).status_code == 401


async def test_jwks_is_cached_and_refetched_once_for_a_new_kid(b2c, http_for):
    http = await http_for(b2c)
    for _ in range(3):
        assert (await me(http, b2c.mint_access_token("ana@alai.dev"))).status_code == 200
    assert b2c.jwks_fetches == 1
    from cryptography.hazmat.primitives.asymmetric import rsa

    await asyncio.sleep(external.MIN_REFETCH + 0.1)
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = b2c.mint({"iss": b2c.issuer, "aud": b2c.api_audience, "exp": int(time.time()) + 600, "oid": "x",
                       "emails": ["ana@alai.dev"]}, kid="unknown-kid", key=stranger)
    assert (await me(http, forged)).status_code == 401
    assert (await me(http, forged)).status_code == 401
    assert b2c.jwks_fetches == 2  # one refetch for the unknown kid, not one per request
    # A real rotation is picked up by one refetch (after the minimum gap).
    b2c.rotate_keys()
    await asyncio.sleep(external.MIN_REFETCH + 0.1)
    assert (await me(http, b2c.mint_access_token("ana@alai.dev"))).status_code == 200
    assert b2c.jwks_fetches == 3


async def test_unreachable_issuer_is_503_not_500(http_for):
    from types import SimpleNamespace

    fake = FakeB2C().start()
    gone = SimpleNamespace(authority=fake.authority, api_audience=fake.api_audience, client_id=fake.client_id,
                           full_scope=fake.full_scope)
    fake.stop()  # its address now refuses connections
    http = await http_for(gone)
    header_rs256_kid_x = "eyJhbGciOiJSUzI1NiIsImtpZCI6IngifQ"
    response = await me(http, f"{header_rs256_kid_x}.e30.c2ln")
    assert response.status_code == 503 and "could not fetch" in response.json()["detail"]
    assert response.headers["retry-after"] == "10"
