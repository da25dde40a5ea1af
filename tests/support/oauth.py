"""Driving the built-in issuer's sign-in like a browser would (form fields and redirects)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from html import unescape
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
REDIRECT_URI = "http://localhost:53682/callback"


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_params(challenge: str, **overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code", "client_id": "alai-cli", "redirect_uri": REDIRECT_URI,
        "scope": "openid offline_access", "state": "st-" + secrets.token_hex(4), "nonce": "n-" + secrets.token_hex(4),
        "code_challenge": challenge, "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def form_fields(page: str) -> dict[str, str]:
    return {unescape(name): unescape(value) for name, value in HIDDEN.findall(page)}


def query_of(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def sign_in(http: httpx.AsyncClient, params: dict[str, str], username: str, password: str) -> httpx.Response:
    """GET the authorize page, then POST its form with the credentials; returns the POST's response."""
    page = await http.get("/oauth/authorize?" + urlencode(params))
    assert page.status_code == 200, page.text
    fields = form_fields(page.text)
    return await http.post("/oauth/authorize", data={**fields, "username": username, "password": password})


def sign_in_sync(authorize_url: str, username: str, password: str) -> str:
    """The same against a real server: returns the redirect Location."""
    with httpx.Client(timeout=10) as http:
        page = http.get(authorize_url)
        assert page.status_code == 200, page.text
        base = f"{urlsplit(authorize_url).scheme}://{urlsplit(authorize_url).netloc}"
        response = http.post(f"{base}/oauth/authorize",
                             data={**form_fields(page.text), "username": username, "password": password})
        assert response.status_code == 302, response.text
        return response.headers["location"]


def sign_in_b2c_sync(authorize_url: str, email: str, password: str) -> str:
    """Signs in on the B2C-shaped fake's page (the form posts back to its own URL)."""
    with httpx.Client(timeout=10) as http:
        page = http.get(authorize_url)
        assert page.status_code == 200, page.text
        response = http.post(authorize_url.split("?")[0],
                             data={**form_fields(page.text), "email": email, "password": password})
        assert response.status_code == 302, response.text
        return response.headers["location"]


def at_run_time(claims: dict) -> dict:
    """Claims whose `exp`/`nbf`/`iat` are given as seconds from now, made absolute when the
    test runs: computed in a parametrize list they would date from collection, and a slow
    run could let a "future" nbf pass by the time the test gets to it."""
    now = int(time.time())
    return {key: now + value if key in ("exp", "nbf", "iat") else value for key, value in claims.items()}
