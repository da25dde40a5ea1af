"""`alai login`: OAuth 2.0 authorization code + PKCE (S256) with a loopback redirect.

The control plane says where to sign in (GET /.well-known/alai-login): its built-in
issuer or an external one (Azure AD B2C, Entra External ID). The redirect URI is
http://localhost:<ephemeral port>/callback — B2C refuses 127.0.0.1 in app
registrations — served by a one-shot HTTP server bound to the loopback interface.
Without a browser (`--no-browser`), the user pastes the URL the browser ended on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from alai.client.credentials import Login
from alai.wire.identity import LoginConfig

DONE_PAGE = (b"<!doctype html><html><head><meta charset=utf-8><title>alai</title></head>"
             b"<body style='font-family:system-ui;margin:3rem'><h1>Signed in to alai</h1>"
             b"<p>You can close this tab and return to the terminal.</p></body></html>")
FAILED_PAGE = ("<!doctype html><html><head><meta charset=utf-8><title>alai</title></head>"
               "<body style='font-family:system-ui;margin:3rem'><h1>Sign-in failed</h1><p>{}</p>"
               "<p>Return to the terminal for details.</p></body></html>")


class LoginError(Exception):
    """The login cannot complete; the message says what to do."""


@dataclass
class Flow:
    config: LoginConfig
    discovery: dict[str, Any]
    redirect_uri: str
    state: str
    nonce: str
    verifier: str

    @property
    def authorize_url(self) -> str:
        challenge = base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=").decode()
        query = {
            "response_type": "code", "client_id": self.config.client_id, "redirect_uri": self.redirect_uri,
            "scope": self.config.scopes, "state": self.state, "nonce": self.nonce,
            "code_challenge": challenge, "code_challenge_method": "S256",
        }
        endpoint = self.discovery["authorization_endpoint"]
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"


def _json(http: httpx.Client, url: str, what: str) -> dict[str, Any]:
    try:
        response = http.get(url)
    except httpx.TransportError as error:
        raise LoginError(f"cannot reach {url} ({error}); check the server URL with `alai config show`") from None
    if response.status_code != 200:
        raise LoginError(f"{what} at {url} answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise LoginError(f"{what} at {url} is not JSON") from None


def prepare(server: str, http: httpx.Client, *, port: int) -> Flow:
    config = LoginConfig.model_validate(_json(http, f"{server}/.well-known/alai-login", "the login configuration"))
    discovery = _json(http, config.discovery_url, "the identity provider's discovery document")
    for field in ("authorization_endpoint", "token_endpoint"):
        if field not in discovery:
            raise LoginError(f"the identity provider's discovery document has no {field}")
    return Flow(
        config=config, discovery=discovery,
        redirect_uri=f"http://{config.redirect_host}:{port}{config.redirect_path}",
        state=secrets.token_urlsafe(24), nonce=secrets.token_urlsafe(24), verifier=secrets.token_urlsafe(64),
    )


def code_from_redirect(flow: Flow, redirected_to: str) -> str:
    """Checks the redirect (state, error, issuer) and returns the authorization code."""
    parts = urlsplit(redirected_to.strip())
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    if query.get("state") != flow.state:
        raise LoginError("the sign-in answer does not belong to this login (state mismatch); run `alai login` again")
    if "error" in query:
        raise LoginError(f"sign-in refused: {query.get('error_description') or query['error']}")
    # RFC 9207: the built-in issuer always names itself; an answer without it, or from
    # another issuer, may be a mix-up attack.
    if ("iss" in query or flow.discovery.get("authorization_response_iss_parameter_supported")) \
            and query.get("iss") != flow.config.issuer:
        raise LoginError("the sign-in answer came from another issuer; run `alai login` again")
    if not query.get("code"):
        raise LoginError("the sign-in answer has no authorization code; run `alai login` again")
    return query["code"]


def _claims(jwt_token: str) -> dict[str, Any]:
    try:
        payload = jwt_token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        raise LoginError("the identity provider returned a malformed token") from None


def _login_from(response: dict[str, Any], *, server: str, issuer: str, client_id: str, discovery: dict[str, Any],
                nonce: str | None, previous: Login | None = None) -> Login:
    access = response.get("access_token")
    if not access:
        raise LoginError("the identity provider returned no access token")
    identity: dict[str, Any] = {}
    if response.get("id_token"):
        identity = _claims(response["id_token"])
        # The ID token came straight from the token endpoint over the connection we
        # opened (OIDC Core 3.1.3.7), so its signature is not re-checked here; its
        # binding to this login is.
        if nonce is not None and identity.get("nonce") != nonce:
            raise LoginError("the ID token does not belong to this login (nonce mismatch); run `alai login` again")
        audience = identity.get("aud")
        if client_id not in (audience if isinstance(audience, list) else [audience]):
            raise LoginError("the ID token was issued for another client")
    emails = identity.get("emails")
    email = identity.get("email") or (emails[0] if isinstance(emails, list) and emails else None) \
        or identity.get("preferred_username")
    return Login(
        server=server, issuer=issuer, client_id=client_id, token_endpoint=discovery["token_endpoint"],
        revocation_endpoint=discovery.get("revocation_endpoint"), access_token=access,
        refresh_token=response.get("refresh_token") or (previous.refresh_token if previous else None),
        expires_at=time.time() + _seconds(response.get("expires_in")),
        subject=identity.get("oid") or identity.get("sub") or (previous.subject if previous else None),
        email=email or (previous.email if previous else None),
        name=identity.get("name") or (previous.name if previous else None),
    )


def _seconds(value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 300.0  # unknown: assume short, renew early
    return seconds if seconds > 0 else 300.0


def _token_request(http: httpx.Client, endpoint: str, form: dict[str, str]) -> dict[str, Any]:
    try:
        response = http.post(endpoint, data=form, headers={"Accept": "application/json"})
    except httpx.TransportError as error:
        raise LoginError(f"cannot reach the token endpoint {endpoint} ({error})") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code != 200:
        description = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
        raise LoginError(f"{description}")
    return body


def exchange(flow: Flow, code: str, http: httpx.Client, *, server: str) -> Login:
    body = _token_request(http, flow.discovery["token_endpoint"], {
        "grant_type": "authorization_code", "client_id": flow.config.client_id, "code": code,
        "redirect_uri": flow.redirect_uri, "code_verifier": flow.verifier,
    })
    return _login_from(body, server=server, issuer=flow.config.issuer, client_id=flow.config.client_id,
                       discovery=flow.discovery, nonce=flow.nonce)


def refresh(login: Login, http: httpx.Client) -> Login:
    if not login.refresh_token:
        raise LoginError("your login has expired and cannot be renewed; run `alai login`")
    try:
        body = _token_request(http, login.token_endpoint, {
            "grant_type": "refresh_token", "client_id": login.client_id, "refresh_token": login.refresh_token,
        })
    except LoginError as error:
        raise LoginError(f"your login could not be renewed ({error}); run `alai login`") from None
    return _login_from(body, server=login.server, issuer=login.issuer, client_id=login.client_id,
                       discovery={"token_endpoint": login.token_endpoint,
                                  "revocation_endpoint": login.revocation_endpoint},
                       nonce=None, previous=login)


def revoke(login: Login, http: httpx.Client) -> None:
    if login.revocation_endpoint and login.refresh_token:
        try:
            http.post(login.revocation_endpoint, data={"token": login.refresh_token, "client_id": login.client_id,
                                                       "token_type_hint": "refresh_token"})
        except httpx.TransportError:
            pass  # the local logout still happens


class CallbackServer:
    """Receives the single redirect of the browser on the loopback interface."""

    def __init__(self) -> None:
        self.result: str | None = None
        self.received = threading.Event()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if urlsplit(self.path).path != "/callback":
                    self.send_error(404)
                    return
                owner.result = f"http://localhost{self.path}"
                query = parse_qs(urlsplit(self.path).query)
                failed = "error" in query
                body = FAILED_PAGE.format(
                    (query.get("error_description") or query.get("error") or [""])[0].replace("<", "&lt;")
                ).encode() if failed else DONE_PAGE
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                owner.received.set()

            def log_message(self, *args: Any) -> None:  # the query holds the code: never print it
                return

        self._servers = [HTTPServer(("127.0.0.1", 0), Handler)]
        self.port = self._servers[0].server_address[1]
        try:  # browsers may resolve localhost to ::1 first
            class V6(HTTPServer):
                address_family = socket.AF_INET6

            self._servers.append(V6(("::1", self.port), Handler))
        except OSError:
            pass
        self._threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
                         for s in self._servers]
        for thread in self._threads:
            thread.start()

    def wait(self, timeout: float) -> str:
        if not self.received.wait(timeout):
            raise LoginError(f"no answer from the browser within {timeout:.0f} s; run `alai login` again "
                             "(or `alai login --no-browser` on a machine without one)")
        return self.result or ""

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
