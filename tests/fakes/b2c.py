"""A wire-faithful fake of Azure AD B2C (flavor="b2c") or Microsoft Entra External ID (flavor="entra").

It serves, on 127.0.0.1 in a daemon thread, what a public client (the CLI, PKCE, no secret) and an API
that verifies bearer tokens see of the real service:

- the OpenID metadata document with the real field set. B2C: per user flow under
  /{tenant}.onmicrosoft.com/{policy}/v2.0/ (the tenant GUID works in place of the tenant name, the
  policy is case-insensitive), issuer https://<host>/{tenant GUID}/v2.0/ (trailing slash) — which,
  as in real B2C, is not where the metadata lives. Entra: /{tenant GUID}/v2.0/, issuer without slash.
- the JWKS (kid, nbf, use, kty, e, n; Entra adds `issuer`), counted in `jwks_fetches`; kids are
  RFC 7638 thumbprints, as opaque as B2C's. `rotate_keys()` adds a key and signs with it.
- /authorize: validates client and redirect URI first (unknown ones get an HTTP 400 HTML error page,
  never a redirect), then redirects other errors to the client with error/error_description
  (`AADB2C900xx: …\\r\\nCorrelation ID: …\\r\\nTimestamp: …`). Only `http://localhost[:port]/…` is a
  registered redirect URI (Entra also accepts http://127.0.0.1), any port, any path.
- a sign-in page: a plain `<form method="post">` (email, password, button#next, the request in
  hidden fields) — real B2C runs a JavaScript page posting to /SelfAsserted with a CSRF cookie.
  Wrong credentials show the page again (HTTP 200) with B2C's messages; right ones redirect with
  code and state (response_mode query, fragment or form_post).
- /token: authorization_code (PKCE S256 checked, single-use codes, 10 minutes, redirect_uri must
  match) and refresh_token (rotating: the old refresh token is refused afterwards — stricter than
  the real services, which keep old ones valid). B2C response fields (not_before, expires_on,
  resource, profile_info …) or Entra ones (ext_expires_in, scope = resource scopes only). Errors
  are HTTP 400 JSON with AADB2C / AADSTS codes; Entra adds error_codes, trace_id, correlation_id.
- tokens: RS256, header {alg, kid, typ: JWT}. B2C v1.0 claims (oid = sub, emails, tfp, scp, azp,
  auth_time); Entra v2.0 claims (tid, oid, pairwise sub per app, preferred_username, email, azp,
  azpacr) and no tfp/emails. Access and ID tokens share `access_token_lifetime`.

Limits: one public client and one API; no SSO session (every /authorize shows the form; `prompt`,
`max_age`, `login_hint` are ignored); no sign-up, password reset, MFA or social IdPs; no implicit,
ROPC, client-credentials or device flows; PKCE `plain` (accepted by B2C) is refused; on refresh the
original scopes are granted again whatever `scope` says; no c_hash/at_hash/aio/uti/x5t/x5c;
logout only redirects. Codes are consumed only by a successful redemption. `clock` (a callable
returning epoch seconds, time.time by default) can be replaced to test expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm, get_default_algorithms

TENANT_ID = "3f0e6b1a-7c2d-4e8f-9a5b-1c2d3e4f5a6b"
CODE_LIFETIME = 600
REFRESH_LIFETIME = 14 * 24 * 3600  # B2C's default refresh token lifetime (1209600 s)
# The header of B2C's opaque codes and refresh tokens (JWE, "cpimcore" key).
_B2C_GRANT_HEADER = "eyJraWQiOiJjcGltY29yZV8wOTI1MjAxNSIsInZlciI6IjEuMCIsInppcCI6IkRlZmxhdGUiLCJzZXIiOiIxLjAifQ"

# situation: (error, B2C description, Entra description[, Entra error])
_ERRORS: dict[str, tuple[str, ...]] = {
    "missing": ("invalid_request", "AADB2C90083: The request is missing required parameter: {0}.",
                "AADSTS900144: The request body must contain the following parameter: '{0}'."),
    "no_client": ("invalid_request", "AADB2C90008: The request does not contain a client ID parameter.",
                  "AADSTS900144: The request body must contain the following parameter: 'client_id'."),
    "unknown_client": ("invalid_client",
                       "AADB2C90018: The client ID '{0}' specified in the request is not registered in tenant '{1}'.",
                       "AADSTS700016: Application with identifier '{0}' was not found in the directory '{1}'.",
                       "unauthorized_client"),
    "redirect": ("invalid_request",
                 "AADB2C90006: The redirect URI '{0}' provided in the request is not registered for the client ID '{1}'.",
                 "AADSTS50011: The redirect URI '{0}' specified in the request does not match the redirect URIs "
                 "configured for the application '{1}'."),
    "response_type": ("unsupported_response_type",
                      "AADB2C90013: The requested response type '{0}' provided in the request is not supported.",
                      "AADSTS700054: response_type '{0}' is not enabled for the application."),
    "no_scope": ("invalid_request", "AADB2C90010: The request does not contain a scope parameter.",
                 "AADSTS900144: The request body must contain the following parameter: 'scope'."),
    "scope": ("invalid_scope", "AADB2C90117: The scope '{0}' provided in the request is not supported.",
              "AADSTS70011: The provided value for the input parameter 'scope' is not valid. The scope {0} is not valid."),
    "no_pkce": ("invalid_request", "AADB2C99059: The supplied request must present a code_challenge.",
                "AADSTS9002325: Proof Key for Code Exchange is required for cross-origin authorization code redemption."),
    "pkce_method": ("invalid_request", "AADB2C90184: The supplied code_challenge_method is not supported. Supported "
                    "values are plain or S256 (this fake accepts only S256).",
                    "AADSTS9002325: Proof Key for Code Exchange with code_challenge_method S256 is required "
                    "(this fake refuses '{0}')."),
    "grant_type": ("unsupported_grant_type", "AADB2C90086: The supplied grant_type [{0}] is not supported.",
                   "AADSTS70003: The app requested an unsupported grant type '{0}'."),
    "secret": ("invalid_request",
               "AADB2C90084: Public clients should not send a client_secret when redeeming a publicly acquired grant.",
               "AADSTS700025: Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
               "invalid_client"),
    "expired": ("invalid_grant", "AADB2C90080: The provided grant has expired. Please re-authenticate and try again.",
                "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity. "
                "Send a new interactive authorization request for this user and resource."),
    "code_used": ("invalid_grant", "AADB2C90080: The provided grant has expired. Please re-authenticate and try again.",
                  "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new valid code "
                  "or use an existing refresh token."),
    "code_redirect": ("invalid_grant", "AADB2C90088: The provided grant has not been issued for this endpoint. "
                      "Actual Value : {0} and Expected Value : {1}",
                      "AADSTS500112: The reply address '{0}' does not match the reply address '{1}' provided when "
                      "requesting Authorization code."),
    "verifier": ("invalid_grant", "AADB2C90182: The supplied code_verifier does not match associated code_challenge",
                 "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request."),
    "revoked": ("invalid_grant", "AADB2C90129: The provided grant has been revoked. Please reauthenticate and try again.",
                "AADSTS70000: The provided value for the 'refresh_token' is not valid: it was revoked."),
}
_SIGNIN_ERRORS = {"b2c": ("We can't seem to find your account.", "Your password is incorrect."),
                  "entra": ("We couldn't find an account with this email address.", "Your password is incorrect.")}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


class FakeB2C:
    def __init__(self, *, tenant: str = "alaitest", policy: str = "B2C_1_signin",
                 client_id: str = "11111111-2222-3333-4444-555555555555",
                 api_audience: str = "66666666-7777-8888-9999-000000000000",
                 api_scope: str = "alai.access", flavor: str = "b2c", access_token_lifetime: int = 3600) -> None:
        if flavor not in ("b2c", "entra"):
            raise ValueError("flavor must be 'b2c' or 'entra'")
        self.tenant, self.policy, self.client_id = tenant, policy, client_id
        self.api_audience, self.api_scope, self.flavor = api_audience, api_scope, flavor
        self.access_token_lifetime = access_token_lifetime
        self.tenant_id = TENANT_ID
        self.jwks_fetches = 0
        self.clock: Callable[[], float] = time.time
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, Any]] = {}
        self._codes: dict[str, dict[str, Any]] = {}
        self._used_codes: set[str] = set()
        self._refresh: dict[str, dict[str, Any]] = {}
        self._revoked: set[str] = set()
        self._keys: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.rotate_keys()

    # --- lifecycle and addresses -------------------------------------------------------------
    def start(self) -> FakeB2C:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self  # type: ignore[attr-defined]
        # A short poll interval: stop() waits for serve_forever to notice the shutdown request.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="fake-b2c",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join(5)
            self._server = self._thread = None

    def __enter__(self) -> FakeB2C:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeB2C is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def _prefix(self) -> str:
        return f"/{self.tenant}.onmicrosoft.com/{self.policy}" if self.flavor == "b2c" else f"/{self.tenant_id}"

    @property
    def authority(self) -> str:
        return f"{self.base_url}{self._prefix}/v2.0"

    @property
    def discovery_url(self) -> str:
        return self.authority + "/.well-known/openid-configuration"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/{self.tenant_id}/v2.0" + ("/" if self.flavor == "b2c" else "")

    @property
    def jwks_uri(self) -> str:
        return f"{self.base_url}{self._prefix}/discovery/v2.0/keys"

    def _endpoint(self, name: str) -> str:
        return f"{self.base_url}{self._prefix}/oauth2/v2.0/{name}"

    @property
    def api_scope_uri(self) -> str:
        if self.flavor == "b2c":
            return f"https://{self.tenant}.onmicrosoft.com/{self.api_audience}/{self.api_scope}"
        return f"api://{self.api_audience}/{self.api_scope}"

    @property
    def full_scope(self) -> str:
        return f"openid offline_access {self.api_scope_uri}"

    def discovery(self) -> dict[str, Any]:
        common = {"issuer": self.issuer, "authorization_endpoint": self._endpoint("authorize"),
                  "token_endpoint": self._endpoint("token"), "end_session_endpoint": self._endpoint("logout"),
                  "jwks_uri": self.jwks_uri, "response_modes_supported": ["query", "fragment", "form_post"]}
        if self.flavor == "b2c":
            return {**common, "response_types_supported": [
                "code", "code id_token", "code token", "code id_token token", "id_token", "id_token token",
                "token", "token id_token"],
                "scopes_supported": ["openid"], "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
                "claims_supported": ["name", "emails", "idp", "oid", "sub", "tfp", "iss", "iat", "exp", "aud",
                                     "acr", "nonce", "auth_time"]}
        return {**common, "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                                    "client_secret_basic"],
                "subject_types_supported": ["pairwise"], "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "request_uri_parameter_supported": False, "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce",
                                     "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"]}

    # --- keys and signing --------------------------------------------------------------------
    def rotate_keys(self) -> str:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        thumbprint = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"))
        kid = _b64(hashlib.sha256(thumbprint.encode()).digest())
        with self._lock:
            self._keys.append({"kid": kid, "private": private, "nbf": int(self.clock()), "e": jwk["e"], "n": jwk["n"]})
        return kid

    def jwks(self) -> dict[str, Any]:
        extra = {"issuer": self.issuer} if self.flavor == "entra" and self._server else {}
        return {"keys": [{"kid": k["kid"], "nbf": k["nbf"], "use": "sig", "kty": "RSA", "e": k["e"], "n": k["n"],
                          **extra} for k in self._keys]}

    def public_key_pem(self) -> bytes:
        return self._keys[-1]["private"].public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def mint(self, claims: dict, *, alg: str = "RS256", kid: str | None = None, key: Any = None,
             headers: dict | None = None) -> str:
        header = {"alg": alg, "kid": kid or self._keys[-1]["kid"], "typ": "JWT", **(headers or {})}
        header = {name: value for name, value in header.items() if value is not None}
        signing_input = f"{_b64(_json(header))}.{_b64(_json(claims))}".encode()
        if alg == "none":
            signature = b""
        elif alg.startswith("HS"):
            if key is None:
                raise ValueError("HS* tokens need key= (bytes or str)")
            secret = key.encode() if isinstance(key, str) else key
            signature = hmac.new(secret, signing_input, getattr(hashlib, "sha" + alg[2:])).digest()
        else:
            algorithm = get_default_algorithms()[alg]
            signature = algorithm.sign(signing_input, algorithm.prepare_key(key or self._keys[-1]["private"]))
        return f"{signing_input.decode()}.{_b64(signature)}"

    # --- users and tokens --------------------------------------------------------------------
    def add_user(self, email: str, password: str, *, name: str | None = None, oid: str | None = None) -> dict:
        user = {"email": email, "password": password, "name": name or email.split("@")[0],
                "oid": oid or str(uuid.uuid4())}
        with self._lock:
            if email.lower() in self._users:
                raise ValueError(f"a user with the email {email} already exists")
            self._users[email.lower()] = user
        return dict(user)

    def _pairwise_sub(self, oid: str, app_id: str) -> str:
        return _b64(hashlib.sha256(f"{self.tenant_id}|{app_id}|{oid}".encode()).digest()[:32])

    def _claims(self, user: dict, *, aud: str, auth_time: int, now: int) -> dict[str, Any]:
        claims: dict[str, Any] = {"iss": self.issuer, "exp": now + self.access_token_lifetime, "nbf": now,
                                  "aud": aud, "oid": user["oid"], "name": user["name"], "iat": now}
        if self.flavor == "b2c":
            claims.update(sub=user["oid"], emails=[user["email"]], tfp=self.policy, ver="1.0", auth_time=auth_time)
        else:
            claims.update(sub=self._pairwise_sub(user["oid"], aud), tid=self.tenant_id, ver="2.0",
                          preferred_username=user["email"], email=user["email"])
        return claims

    def _access_claims(self, user: dict, auth_time: int, now: int) -> dict[str, Any]:
        claims = self._claims(user, aud=self.api_audience, auth_time=auth_time, now=now)
        claims.update(scp=self.api_scope, azp=self.client_id)
        if self.flavor == "entra":
            claims["azpacr"] = "0"
        return claims

    def _user(self, email: str) -> dict:
        user = self._users.get(email.lower())
        if user is None:
            raise KeyError(f"no user {email!r}; call add_user first")
        return user

    def mint_access_token(self, email: str, **overrides: Any) -> str:
        now = int(self.clock())
        claims = {**self._access_claims(self._user(email), now, now), **overrides}
        return self.mint({name: value for name, value in claims.items() if value is not None})

    def _grant_token(self) -> str:
        if self.flavor == "b2c":  # B2C codes and refresh tokens are 5-segment JWEs
            return ".".join([_B2C_GRANT_HEADER, *(_b64(secrets.token_bytes(n)) for n in (0, 12, 96, 16))])
        return "1.A" + _b64(secrets.token_bytes(96))

    def _issue(self, grant: dict[str, Any]) -> dict[str, Any]:
        """The token response for a grant (user email, scopes, auth_time, nonce)."""
        now = int(self.clock())
        user = self._user(grant["email"])
        scopes = grant["scopes"]
        response: dict[str, Any] = {}
        if self.api_scope_uri in scopes or f"{self.api_audience}/{self.api_scope}" in scopes:
            response["access_token"] = self.mint(self._access_claims(user, grant["auth_time"], now))
        if "openid" in scopes:
            claims = self._claims(user, aud=self.client_id, auth_time=grant["auth_time"], now=now)
            if grant.get("nonce"):
                claims["nonce"] = grant["nonce"]
            response["id_token"] = self.mint(claims)
        response["token_type"] = "Bearer"
        if self.flavor == "b2c":
            response["not_before"] = now
            if "access_token" in response:
                response.update(expires_in=self.access_token_lifetime, expires_on=now + self.access_token_lifetime,
                                resource=self.api_audience)
            if "id_token" in response:
                response["id_token_expires_in"] = self.access_token_lifetime
            profile = {"ver": "1.0", "tid": self.tenant_id, "sub": None, "name": user["name"],
                       "preferred_username": None, "idp": "LocalAccount"}
            response.update(profile_info=_b64(_json(profile)), scope=" ".join(scopes))
        else:
            resource_scopes = [s for s in scopes if s not in ("openid", "offline_access", "profile", "email")]
            response.update(scope=" ".join(resource_scopes or scopes), expires_in=self.access_token_lifetime,
                            ext_expires_in=self.access_token_lifetime)
        if "offline_access" in scopes:
            token = self._grant_token()
            with self._lock:
                self._refresh[token] = {**grant, "nonce": None, "expires": now + REFRESH_LIFETIME}
            response["refresh_token"] = token
            if self.flavor == "b2c":
                response["refresh_token_expires_in"] = REFRESH_LIFETIME
        return response

    # --- protocol helpers --------------------------------------------------------------------
    def _error(self, situation: str, *args: Any) -> tuple[str, str, dict[str, Any]]:
        entry = _ERRORS[situation]
        now = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        correlation, trace = str(uuid.uuid4()), str(uuid.uuid4())
        if self.flavor == "b2c":
            text = entry[1].format(*args)
            return entry[0], f"{text}\r\nCorrelation ID: {correlation}\r\nTimestamp: {now}\r\n", {}
        text = entry[2].format(*args)
        extra = {"error_codes": [int(text[6:text.index(":")])], "timestamp": now, "trace_id": trace,
                 "correlation_id": correlation}
        description = f"{text}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {now}"
        return (entry[3] if len(entry) > 3 else entry[0]), description, extra

    def _redirect_allowed(self, uri: str) -> bool:
        parts = urlsplit(uri)
        hosts = ("localhost",) if self.flavor == "b2c" else ("localhost", "127.0.0.1")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            return False
        return (parts.scheme == "http" and parts.hostname in hosts and not parts.fragment
                and not parts.username and parts.netloc.split(":")[0] in hosts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeB2C"
    sys_version = ""

    @property
    def fake(self) -> FakeB2C:
        return self.server.fake  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), "application/json; charset=utf-8")

    def _route(self) -> tuple[str | None, dict[str, str]]:
        parts = urlsplit(self.path)
        fake = self.fake
        prefixes = [fake._prefix]
        if fake.flavor == "b2c":
            prefixes.append(f"/{fake.tenant_id}/{fake.policy}")
        path = parts.path.rstrip("/").lower()
        for prefix in prefixes:
            rest = path[len(prefix):] if path.startswith(prefix.lower()) else None
            name = {"/v2.0/.well-known/openid-configuration": "discovery", "/discovery/v2.0/keys": "jwks",
                    "/oauth2/v2.0/authorize": "authorize", "/oauth2/v2.0/token": "token",
                    "/oauth2/v2.0/logout": "logout"}.get(rest or "")
            if name:
                return name, dict(parse_qsl(parts.query, keep_blank_values=True))
        return None, {}

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        if not (self.headers.get("Content-Type") or "").startswith("application/x-www-form-urlencoded"):
            return {}
        form: dict[str, str] = {}
        for name, value in parse_qsl(body, keep_blank_values=True):
            form.setdefault(name, value)
        return form

    def do_GET(self) -> None:  # noqa: N802
        name, query = self._route()
        fake = self.fake
        if name == "discovery":
            self._send_json(200, fake.discovery())
        elif name == "jwks":
            with fake._lock:
                fake.jwks_fetches += 1
            self._send_json(200, fake.jwks())
        elif name == "authorize":
            self._authorize(query, None)
        elif name == "logout":
            target = query.get("post_logout_redirect_uri", "")
            if target and fake._redirect_allowed(target):
                self._send(302, b"", "text/html", {"Location": target})
            else:
                self._send(200, b"<html><body><p>You have signed out.</p></body></html>", "text/html; charset=utf-8")
        else:
            self._send(404, b"Not found", "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        name, _ = self._route()
        form = self._form()
        if name == "authorize":
            self._authorize(form, form)
        elif name == "token":
            self._token(form)
        else:
            self._send(404 if name is None else 405, b"Not found", "text/plain")

    # --- /authorize ----------------------------------------------------------------------
    def _error_page(self, situation: str, *args: Any) -> None:
        _, description, _ = self.fake._error(situation, *args)
        lines = "".join(f"<p>{html.escape(line)}</p>" for line in description.splitlines() if line)
        body = (f"<!DOCTYPE html><html><head><title>Error</title></head><body><div id=\"api\" class=\"error\">"
                f"<h1>Sorry, but we're having trouble signing you in.</h1>{lines}</div></body></html>")
        self._send(400, body.encode(), "text/html; charset=utf-8")

    def _respond(self, params: dict[str, str], result: dict[str, str]) -> None:
        redirect_uri = params["redirect_uri"]
        if "state" in params:
            result = {**result, "state": params["state"]}
        mode = params.get("response_mode") or "query"
        if mode == "form_post":
            fields = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
                             for k, v in result.items())
            body = (f'<html><body onload="document.forms[0].submit()"><form method="post" '
                    f'action="{html.escape(redirect_uri)}">{fields}</form></body></html>')
            self._send(200, body.encode(), "text/html; charset=utf-8")
            return
        separator = "#" if mode == "fragment" else ("&" if "?" in redirect_uri else "?")
        self._send(302, b"", "text/html", {"Location": redirect_uri + separator + urlencode(result)})

    def _redirect_error(self, params: dict[str, str], situation: str, *args: Any) -> None:
        error, description, _ = self.fake._error(situation, *args)
        self._respond(params, {"error": error, "error_description": description})

    def _authorize(self, params: dict[str, str], credentials: dict[str, str] | None) -> None:
        fake = self.fake
        client_id, redirect_uri = params.get("client_id", ""), params.get("redirect_uri", "")
        if not client_id:
            return self._error_page("no_client")
        if client_id != fake.client_id:
            return self._error_page("unknown_client", client_id, f"{fake.tenant}.onmicrosoft.com")
        if not fake._redirect_allowed(redirect_uri):
            return self._error_page("redirect", redirect_uri, client_id)
        if params.get("response_type") != "code":
            return self._redirect_error(params, "response_type", params.get("response_type", ""))
        scopes = params.get("scope", "").split()
        if not scopes:
            return self._redirect_error(params, "no_scope")
        allowed = {"openid", "offline_access", "profile", "email", fake.api_scope_uri}
        if fake.flavor == "entra":
            allowed.add(f"{fake.api_audience}/{fake.api_scope}")
        unknown = [s for s in scopes if s not in allowed]
        if unknown:
            return self._redirect_error(params, "scope", unknown[0])
        if not params.get("code_challenge"):
            return self._redirect_error(params, "no_pkce")
        method = params.get("code_challenge_method") or "plain"
        if method != "S256":
            return self._redirect_error(params, "pkce_method", method)
        error = None
        if credentials is not None:
            user = fake._users.get(credentials.get("email", "").strip().lower())
            if user is None:
                error = _SIGNIN_ERRORS[fake.flavor][0]
            elif not hmac.compare_digest(user["password"].encode(), credentials.get("password", "").encode()):
                error = _SIGNIN_ERRORS[fake.flavor][1]
            else:
                code = fake._grant_token()
                now = int(fake.clock())
                with fake._lock:
                    fake._codes[code] = {"email": user["email"], "scopes": scopes, "nonce": params.get("nonce"),
                                         "client_id": client_id, "redirect_uri": redirect_uri, "auth_time": now,
                                         "code_challenge": params["code_challenge"], "expires": now + CODE_LIFETIME}
                return self._respond(params, {"code": code})
        self._signin_page(params, error, credentials.get("email", "") if credentials else "")

    def _signin_page(self, params: dict[str, str], error: str | None, email: str) -> None:
        carried = ("client_id", "redirect_uri", "response_type", "response_mode", "scope", "state", "nonce",
                   "code_challenge", "code_challenge_method", "prompt", "login_hint")
        hidden = "".join(f'<input type="hidden" name="{name}" value="{html.escape(params[name])}">'
                         for name in carried if name in params)
        alert = (f'<div class="error pageLevel" role="alert"><p>{html.escape(error)}</p></div>' if error else "")
        email = email or params.get("login_hint", "")
        body = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Sign in</title></head>
<body><div id="api" data-name="Unified"><h1>Sign in with your email address</h1>{alert}
<form id="localAccountForm" method="post">{hidden}
<label for="email">Email Address</label>
<input type="email" id="email" name="email" value="{html.escape(email)}" autocomplete="username">
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password">
<button type="submit" id="next">Sign in</button>
</form></div></body></html>"""
        self._send(200, body.encode(), "text/html; charset=utf-8")

    # --- /token --------------------------------------------------------------------------
    def _token_error(self, situation: str, *args: Any) -> None:
        error, description, extra = self.fake._error(situation, *args)
        self._send_json(400, {"error": error, "error_description": description, **extra})

    def _token(self, form: dict[str, str]) -> None:
        fake = self.fake
        grant_type = form.get("grant_type", "")
        if not grant_type:
            return self._token_error("missing", "grant_type")
        if grant_type not in ("authorization_code", "refresh_token"):
            return self._token_error("grant_type", grant_type)
        client_id = form.get("client_id", "")
        if not client_id:
            return self._token_error("missing", "client_id")
        if client_id != fake.client_id:
            return self._token_error("unknown_client", client_id, f"{fake.tenant}.onmicrosoft.com")
        if form.get("client_secret") or form.get("client_assertion"):
            return self._token_error("secret")
        now = fake.clock()
        if grant_type == "authorization_code":
            for name in ("code", "redirect_uri", "code_verifier"):
                if not form.get(name):
                    return self._token_error("missing", name)
            code = form["code"]
            with fake._lock:
                grant = fake._codes.get(code)
                if grant is None or grant["expires"] < now:
                    return self._token_error("code_used" if code in fake._used_codes else "expired")
                if form["redirect_uri"] != grant["redirect_uri"]:
                    return self._token_error("code_redirect", form["redirect_uri"], grant["redirect_uri"])
                challenge = _b64(hashlib.sha256(form["code_verifier"].encode()).digest())
                if not hmac.compare_digest(challenge, grant["code_challenge"]):
                    return self._token_error("verifier")
                del fake._codes[code]
                fake._used_codes.add(code)
        else:
            token = form.get("refresh_token", "")
            if not token:
                return self._token_error("missing", "refresh_token")
            with fake._lock:
                grant = fake._refresh.pop(token, None)
                if grant is None:
                    return self._token_error("revoked" if token in fake._revoked else "expired")
                fake._revoked.add(token)
            if grant["expires"] < now:
                return self._token_error("expired")
        self._send_json(200, fake._issue(grant))
