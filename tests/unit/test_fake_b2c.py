"""The Azure AD B2C / Entra External ID fake speaks the real wire format (tests/fakes/b2c.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterator
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from tests.fakes.b2c import FakeB2C

EMAIL, PASSWORD = "Ada@Example.com", "correct horse battery"
REDIRECT = "http://localhost:53682/callback"
ADA_OID = "0c0ffee0-1234-4abc-8def-0123456789ab"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, b64(hashlib.sha256(verifier.encode()).digest())


def hidden_fields(page: str) -> dict[str, str]:
    return {name: unescape(value) for name, value in
            re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)}


@pytest.fixture(params=["b2c", "entra"])
def fake(request) -> Iterator[FakeB2C]:
    with FakeB2C(flavor=request.param) as server:
        server.add_user(EMAIL, PASSWORD, name="Ada Lovelace", oid=ADA_OID)
        yield server


@pytest.fixture
def b2c() -> Iterator[FakeB2C]:
    with FakeB2C() as server:
        server.add_user(EMAIL, PASSWORD, name="Ada Lovelace", oid=ADA_OID)
        yield server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False, timeout=10) as client:
        yield client


def authorize_params(fake: FakeB2C, challenge: str, **extra: str) -> dict[str, str]:
    return {"client_id": fake.client_id, "redirect_uri": REDIRECT, "response_type": "code",
            "scope": fake.full_scope, "state": "st-123", "nonce": "n-456", "code_challenge": challenge,
            "code_challenge_method": "S256", **extra}


def sign_in(fake: FakeB2C, http: httpx.Client, verifier_challenge: tuple[str, str] | None = None,
            password: str = PASSWORD) -> httpx.Response:
    """GET the page, then POST its form back with credentials, the way a browser does."""
    _, challenge = verifier_challenge or pkce()
    endpoint = http.get(fake.discovery_url).json()["authorization_endpoint"]
    page = http.get(endpoint, params=authorize_params(fake, challenge))
    assert page.status_code == 200 and 'id="next"' in page.text
    return http.post(str(page.url), data={**hidden_fields(page.text), "email": EMAIL.lower(), "password": password})


def code_from(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == ["st-123"]
    return query["code"][0]


def redeem(fake: FakeB2C, http: httpx.Client, code: str, verifier: str, **extra: str) -> httpx.Response:
    return http.post(fake.discovery()["token_endpoint"], data={
        "grant_type": "authorization_code", "client_id": fake.client_id, "code": code,
        "redirect_uri": REDIRECT, "code_verifier": verifier, "scope": fake.full_scope, **extra})


def refresh(fake: FakeB2C, http: httpx.Client, token: str) -> httpx.Response:
    return http.post(fake.discovery()["token_endpoint"], data={
        "grant_type": "refresh_token", "client_id": fake.client_id, "refresh_token": token,
        "scope": fake.full_scope})


def login(fake: FakeB2C, http: httpx.Client) -> dict:
    verifier, challenge = pkce()
    response = redeem(fake, http, code_from(sign_in(fake, http, (verifier, challenge))), verifier)
    assert response.status_code == 200, response.text
    return response.json()


def decode(fake: FakeB2C, token: str, audience: str) -> dict:
    key = jwt.PyJWKClient(fake.jwks_uri).get_signing_key_from_jwt(token)
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience, issuer=fake.issuer)


def test_b2c_discovery_document_and_jwks(b2c: FakeB2C, http: httpx.Client):
    assert b2c.authority == f"{b2c.base_url}/alaitest.onmicrosoft.com/B2C_1_signin/v2.0"
    assert b2c.issuer == f"{b2c.base_url}/{b2c.tenant_id}/v2.0/"
    assert b2c.full_scope == f"openid offline_access https://alaitest.onmicrosoft.com/{b2c.api_audience}/alai.access"
    response = http.get(b2c.discovery_url)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    doc = response.json()
    root = f"{b2c.base_url}/alaitest.onmicrosoft.com/B2C_1_signin"
    assert doc["issuer"] == b2c.issuer
    assert doc["authorization_endpoint"] == root + "/oauth2/v2.0/authorize"
    assert doc["token_endpoint"] == root + "/oauth2/v2.0/token"
    assert doc["end_session_endpoint"] == root + "/oauth2/v2.0/logout"
    assert doc["jwks_uri"] == b2c.jwks_uri == root + "/discovery/v2.0/keys"
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert doc["subject_types_supported"] == ["pairwise"] and doc["scopes_supported"] == ["openid"]
    assert "code" in doc["response_types_supported"] and "query" in doc["response_modes_supported"]
    assert {"tfp", "emails", "oid", "sub", "nonce", "auth_time"} <= set(doc["claims_supported"])
    assert "token_endpoint_auth_methods_supported" in doc
    # The policy is case-insensitive and the tenant GUID works in place of the tenant name.
    assert http.get(b2c.discovery_url.replace("B2C_1_signin", "b2c_1_signin")).json() == doc
    assert http.get(f"{b2c.base_url}/{b2c.tenant_id}/b2c_1_signin/v2.0/.well-known/openid-configuration").json() == doc
    assert http.get(f"{b2c.base_url}/alaitest.onmicrosoft.com/B2C_1_other/v2.0/.well-known/openid-configuration"
                    ).status_code == 404
    assert b2c.jwks_fetches == 0
    keys = http.get(b2c.jwks_uri).json()["keys"]
    assert b2c.jwks_fetches == 1
    assert len(keys) == 1 and set(keys[0]) == {"kid", "nbf", "use", "kty", "e", "n"}
    assert (keys[0]["use"], keys[0]["kty"], keys[0]["e"]) == ("sig", "RSA", "AQAB")
    http.get(b2c.jwks_uri)
    assert b2c.jwks_fetches == 2


def test_entra_discovery_document(http: httpx.Client):
    with FakeB2C(flavor="entra") as entra:
        assert entra.authority == f"{entra.base_url}/{entra.tenant_id}/v2.0"
        assert entra.issuer == entra.authority
        assert entra.full_scope == f"openid offline_access api://{entra.api_audience}/alai.access"
        doc = http.get(entra.discovery_url).json()
        assert doc["issuer"] == entra.issuer
        assert doc["token_endpoint"] == f"{entra.base_url}/{entra.tenant_id}/oauth2/v2.0/token"
        assert doc["jwks_uri"] == f"{entra.base_url}/{entra.tenant_id}/discovery/v2.0/keys"
        assert "offline_access" in doc["scopes_supported"] and "tfp" not in doc["claims_supported"]
        assert http.get(entra.jwks_uri).json()["keys"][0]["issuer"] == entra.issuer


def test_pkce_flow_and_b2c_token_shapes(b2c: FakeB2C, http: httpx.Client):
    tokens = login(b2c, http)
    assert set(tokens) == {"access_token", "id_token", "token_type", "not_before", "expires_in", "expires_on",
                           "resource", "id_token_expires_in", "profile_info", "scope", "refresh_token",
                           "refresh_token_expires_in"}
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
    assert tokens["expires_on"] == tokens["not_before"] + 3600 and tokens["resource"] == b2c.api_audience
    assert tokens["refresh_token_expires_in"] == 1209600 and tokens["refresh_token"].count(".") == 4
    profile = json.loads(base64.urlsafe_b64decode(tokens["profile_info"] + "=="))
    assert profile["tid"] == b2c.tenant_id and profile["name"] == "Ada Lovelace"
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header == {"alg": "RS256", "kid": header["kid"], "typ": "JWT"}
    access = decode(b2c, tokens["access_token"], b2c.api_audience)
    assert access["oid"] == access["sub"] == ADA_OID
    assert access["emails"] == [EMAIL] and access["name"] == "Ada Lovelace"
    assert (access["tfp"], access["scp"], access["azp"], access["ver"]) == ("B2C_1_signin", "alai.access",
                                                                              b2c.client_id, "1.0")
    assert access["exp"] - access["nbf"] == 3600 and access["iat"] >= access["auth_time"]
    assert "tid" not in access and "preferred_username" not in access
    id_token = decode(b2c, tokens["id_token"], b2c.client_id)
    assert id_token["nonce"] == "n-456" and id_token["oid"] == ADA_OID and id_token["tfp"] == "B2C_1_signin"


def test_entra_token_shapes():
    with FakeB2C(flavor="entra") as entra, httpx.Client(follow_redirects=False) as http:
        user = entra.add_user(EMAIL, PASSWORD)
        tokens = login(entra, http)
        assert {"access_token", "id_token", "refresh_token", "ext_expires_in"} <= set(tokens)
        assert "profile_info" not in tokens and tokens["scope"] == f"api://{entra.api_audience}/alai.access"
        access = decode(entra, tokens["access_token"], entra.api_audience)
        assert (access["ver"], access["tid"], access["oid"]) == ("2.0", entra.tenant_id, user["oid"])
        assert access["preferred_username"] == access["email"] == EMAIL
        assert (access["scp"], access["azp"]) == ("alai.access", entra.client_id)
        assert access["sub"] != user["oid"] and len(access["sub"]) == 43
        assert "tfp" not in access and "emails" not in access and "auth_time" not in access
        id_token = decode(entra, tokens["id_token"], entra.client_id)
        assert id_token["nonce"] == "n-456" and id_token["oid"] == user["oid"] and id_token["sub"] != access["sub"]


def test_refresh_rotates_and_the_old_token_is_refused(fake: FakeB2C, http: httpx.Client):
    first = login(fake, http)
    second = refresh(fake, http, first["refresh_token"])
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"] and "nonce" not in jwt.decode(
        rotated["id_token"], options={"verify_signature": False})
    assert decode(fake, rotated["access_token"], fake.api_audience)["oid"] == ADA_OID
    again = refresh(fake, http, first["refresh_token"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert again.json()["error_description"].startswith("AADB2C90129" if fake.flavor == "b2c" else "AADSTS70000")
    assert refresh(fake, http, rotated["refresh_token"]).status_code == 200
    unknown = refresh(fake, http, "not-a-refresh-token")
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_grant"


def test_code_is_single_use(fake: FakeB2C, http: httpx.Client):
    verifier, challenge = pkce()
    code = code_from(sign_in(fake, http, (verifier, challenge)))
    assert redeem(fake, http, code, verifier).status_code == 200
    replay = redeem(fake, http, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    if fake.flavor == "entra":
        assert replay.json()["error_codes"] == [54005] and "correlation_id" in replay.json()


def test_code_expires_after_ten_minutes(b2c: FakeB2C, http: httpx.Client):
    verifier, challenge = pkce()
    code = code_from(sign_in(b2c, http, (verifier, challenge)))
    real_clock = b2c.clock
    b2c.clock = lambda: real_clock() + 601
    expired = redeem(b2c, http, code, verifier)
    assert expired.status_code == 400 and expired.json()["error_description"].startswith("AADB2C90080: ")
    assert "\r\nCorrelation ID: " in expired.json()["error_description"]


def test_wrong_verifier_and_wrong_redirect_are_refused(fake: FakeB2C, http: httpx.Client):
    verifier, challenge = pkce()
    code = code_from(sign_in(fake, http, (verifier, challenge)))
    wrong = redeem(fake, http, code, pkce()[0])
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert wrong.json()["error_description"].startswith("AADB2C90182" if fake.flavor == "b2c" else "AADSTS501481")
    other_redirect = redeem(fake, http, code, verifier, redirect_uri="http://localhost:9/other")
    assert other_redirect.status_code == 400 and other_redirect.json()["error"] == "invalid_grant"
    assert redeem(fake, http, code, verifier).status_code == 200


@pytest.mark.parametrize(("extra", "code"), [
    ({"code_challenge_method": "plain"}, "AADB2C90184"),
    ({"code_challenge_method": ""}, "AADB2C90184"),
    ({"code_challenge": ""}, "AADB2C99059"),
    ({"scope": "openid https://evil.example/x.all"}, "AADB2C90117"),
    ({"response_type": "id_token"}, "AADB2C90013"),
])
def test_bad_authorize_requests_redirect_with_an_error(b2c: FakeB2C, http: httpx.Client, extra, code):
    params = authorize_params(b2c, pkce()[1], **extra)
    response = http.get(b2c.discovery()["authorization_endpoint"], params=params)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["st-123"] and query["error"][0] in ("invalid_request", "invalid_scope",
                                                                  "unsupported_response_type")
    assert query["error_description"][0].startswith(code + ": ")


@pytest.mark.parametrize("redirect_uri", [
    "https://evil.example/callback", "http://127.0.0.1:5000/callback", "https://localhost/callback",
    "http://localhost.evil.example/cb", "http://localhost@evil.example/cb", "http://localhost/cb#x", ""])
def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(b2c: FakeB2C, http: httpx.Client, redirect_uri):
    params = authorize_params(b2c, pkce()[1], redirect_uri=redirect_uri)
    for response in (http.get(b2c.discovery()["authorization_endpoint"], params=params),
                     http.post(b2c.discovery()["authorization_endpoint"],
                               data={**params, "email": EMAIL, "password": PASSWORD})):
        assert response.status_code == 400 and "location" not in response.headers
        assert response.headers["content-type"].startswith("text/html") and "AADB2C90006" in response.text


def test_entra_also_accepts_the_loopback_ip(http: httpx.Client):
    with FakeB2C(flavor="entra") as entra:
        params = authorize_params(entra, pkce()[1], redirect_uri="http://127.0.0.1:8400/")
        assert http.get(entra.discovery()["authorization_endpoint"], params=params).status_code == 200
        params["redirect_uri"] = "https://evil.example/"
        page = http.get(entra.discovery()["authorization_endpoint"], params=params)
        assert page.status_code == 400 and "AADSTS50011" in page.text


def test_unknown_client_gets_an_error_page(b2c: FakeB2C, http: httpx.Client):
    params = authorize_params(b2c, pkce()[1], client_id="99999999-0000-0000-0000-000000000000")
    response = http.get(b2c.discovery()["authorization_endpoint"], params=params)
    assert response.status_code == 400 and "location" not in response.headers and "AADB2C90018" in response.text


def test_wrong_credentials_show_the_form_again(b2c: FakeB2C, http: httpx.Client):
    response = sign_in(b2c, http, password="wrong")
    assert response.status_code == 200 and "Your password is incorrect." in response.text
    assert '<form id="localAccountForm" method="post">' in response.text
    assert 'name="password" autocomplete' in response.text and 'id="next"' in response.text
    assert hidden_fields(response.text)["state"] == "st-123"
    endpoint = b2c.discovery()["authorization_endpoint"]
    stranger = http.post(endpoint, data={**authorize_params(b2c, pkce()[1]), "email": "x@example.com",
                                         "password": PASSWORD})
    assert stranger.status_code == 200 and "find your account" in stranger.text


def test_token_endpoint_errors(b2c: FakeB2C, http: httpx.Client):
    endpoint = b2c.discovery()["token_endpoint"]
    cases = [({"grant_type": "password", "client_id": b2c.client_id}, "unsupported_grant_type", "AADB2C90086"),
             ({"grant_type": "authorization_code", "client_id": b2c.client_id}, "invalid_request", "AADB2C90083"),
             ({"grant_type": "refresh_token", "client_id": "nope", "refresh_token": "x"}, "invalid_client",
              "AADB2C90018"),
             ({"grant_type": "refresh_token", "client_id": b2c.client_id, "client_secret": "s", "refresh_token": "x"},
              "invalid_request", "AADB2C90084")]
    for form, error, code in cases:
        response = http.post(endpoint, data=form)
        assert response.status_code == 400, form
        assert response.json()["error"] == error and response.json()["error_description"].startswith(code + ": ")


def test_rotate_keys_publishes_both_kids(b2c: FakeB2C, http: httpx.Client):
    old_token = b2c.mint_access_token(EMAIL)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = b2c.rotate_keys()
    assert new_kid != old_kid
    assert [key["kid"] for key in http.get(b2c.jwks_uri).json()["keys"]] == [old_kid, new_kid]
    new_token = login(b2c, http)["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    for token in (old_token, new_token):
        assert decode(b2c, token, b2c.api_audience)["emails"] == [EMAIL]


def test_mint_helpers_for_attack_tests(b2c: FakeB2C):
    token = b2c.mint_access_token(EMAIL, aud="someone-else", tfp=None, scp="alai.access other")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == "someone-else" and "tfp" not in claims and claims["scp"] == "alai.access other"
    unsigned = b2c.mint(claims, alg="none")
    assert unsigned.endswith(".") and jwt.get_unverified_header(unsigned)["alg"] == "none"
    confused = b2c.mint(claims, alg="HS256", key=b2c.public_key_pem())
    signing_input, _, signature = confused.rpartition(".")
    expected = hmac.new(b2c.public_key_pem(), signing_input.encode(), hashlib.sha256).digest()
    assert signature == b64(expected)
    forged = b2c.mint(claims, kid="unknown-kid", headers={"typ": None})
    assert jwt.get_unverified_header(forged) == {"alg": "RS256", "kid": "unknown-kid"}
    assert b2c.public_key_pem().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_stop_releases_the_port():
    fake = FakeB2C().start()
    url = fake.discovery_url
    with httpx.Client() as http:
        assert http.get(url).status_code == 200
        fake.stop()
        with pytest.raises(httpx.ConnectError):
            http.get(url)
    fake.stop()  # idempotent
