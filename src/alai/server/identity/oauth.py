"""The built-in issuer's authorization-code flow (RFC 6749 + PKCE RFC 7636, S256 only).

Clients are few and known: the CLI is a public client whose redirect URI is a
loopback address on any port (RFC 8252 §7.3); everything else matches exactly.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from psycopg import AsyncConnection

from alai.server.identity import jwt_tokens, service
from alai.server.identity.keys import KeyRing
from alai.server.identity.service import OAuthError
from alai.wire.identity import CLI_CLIENT_ID

CODE_LIFETIME = timedelta(minutes=2)
VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]"}


@dataclass(frozen=True)
class Client:
    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    loopback_any_port: bool


CLIENTS = {
    CLI_CLIENT_ID: Client(
        client_id=CLI_CLIENT_ID, name="The alai command line",
        redirect_uris=("http://localhost/callback", "http://127.0.0.1/callback"), loopback_any_port=True,
    ),
}


class InvalidClientRequest(Exception):
    """The client or redirect URI is wrong: show an error page, never redirect."""


def redirect_uri_allowed(client: Client, candidate: str) -> bool:
    if candidate in client.redirect_uris:
        return True
    if not client.loopback_any_port:
        return False
    parts = urlsplit(candidate)
    if parts.scheme != "http" or parts.hostname is None or parts.query or parts.fragment or parts.username:
        return False
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if host not in LOOPBACK_HOSTS:
        return False
    return f"http://{host}{parts.path}" in client.redirect_uris


def check_client(client_id: str | None, redirect_uri: str | None) -> Client:
    client = CLIENTS.get(client_id or "")
    if client is None:
        raise InvalidClientRequest(f"unknown client {client_id!r}")
    if not redirect_uri or not redirect_uri_allowed(client, redirect_uri):
        raise InvalidClientRequest(f"the redirect URI {redirect_uri!r} is not registered for {client.name}")
    return client


def check_authorization_request(params: dict[str, str]) -> None:
    """After client and redirect URI are trusted: the rest of the request (errors redirect)."""
    if params.get("response_type") != "code":
        raise OAuthError("unsupported_response_type", "only response_type=code is supported")
    if params.get("code_challenge_method") != "S256":
        raise OAuthError("invalid_request", "PKCE with code_challenge_method=S256 is required")
    if not CHALLENGE.match(params.get("code_challenge") or ""):
        raise OAuthError("invalid_request", "code_challenge must be a base64url SHA-256 (43 characters)")
    if not params.get("state"):
        raise OAuthError("invalid_request", "state is required")


def error_redirect(redirect_uri: str, error: OAuthError, state: str | None) -> str:
    query = {"error": error.error, "error_description": error.description}
    if state:
        query["state"] = state
    return f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(query)}"


def success_redirect(redirect_uri: str, code: str, state: str, issuer: str) -> str:
    # `iss` in the response (RFC 9207) lets the client detect mix-up attacks.
    query = urlencode({"code": code, "state": state, "iss": issuer})
    return f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}"


async def issue_code(conn: AsyncConnection, *, params: dict[str, str], user: Any) -> str:
    requested = set((params.get("scope") or "").split())
    return await service.create_auth_code(
        conn, client_id=params["client_id"], user_id=user.id, redirect_uri=params["redirect_uri"],
        code_challenge=params["code_challenge"], scope=" ".join(sorted(requested)), nonce=params.get("nonce"),
        lifetime=CODE_LIFETIME,
    )


async def token_response(
    conn: AsyncConnection, *, keyring: KeyRing, issuer: str, user_id: Any, client_id: str, family_id: uuid.UUID,
    requested_scope: str, nonce: str | None, access_ttl: int, refresh_lifetime: timedelta,
) -> dict[str, Any]:
    user = await service.get_user(conn, user_id=user_id)
    if user is None or user.disabled:
        raise OAuthError("invalid_grant", "the account no longer exists or is disabled")
    # The token carries the user's scopes (people are authorised by role, not per consent).
    scope = " ".join(sorted(user.scopes))
    response: dict[str, Any] = {
        "access_token": jwt_tokens.access_token(
            keyring, issuer=issuer, subject=user.id, scope=scope, client_id=client_id, ttl=access_ttl,
            name=user.display_name, email=user.email or user.username,
        ),
        "token_type": "Bearer",
        "expires_in": access_ttl,
        "scope": scope,
    }
    if "openid" in requested_scope.split():
        response["id_token"] = jwt_tokens.id_token(
            keyring, issuer=issuer, subject=user.id, client_id=client_id, nonce=nonce, ttl=access_ttl,
            name=user.display_name, email=user.email or user.username,
        )
    response["refresh_token"] = await service.issue_refresh_token(
        conn, family_id=family_id, user_id=user.id, client_id=client_id, scope=requested_scope,
        lifetime=refresh_lifetime,
    )
    return response


async def exchange(conn: AsyncConnection, *, form: dict[str, str], keyring: KeyRing, issuer: str,
                   access_ttl: int, refresh_lifetime: timedelta) -> dict[str, Any]:
    grant = form.get("grant_type")
    client_id = form.get("client_id") or ""
    if client_id not in CLIENTS:
        raise OAuthError("invalid_client", f"unknown client {client_id!r}", status=401)
    if grant == "authorization_code":
        verifier = form.get("code_verifier") or ""
        if not VERIFIER.match(verifier):
            raise OAuthError("invalid_request", "code_verifier is required (43-128 unreserved characters)")
        row = await service.redeem_auth_code(
            conn, code=form.get("code") or "", client_id=client_id, redirect_uri=form.get("redirect_uri") or "",
            code_verifier=verifier,
        )
        return await token_response(
            conn, keyring=keyring, issuer=issuer, user_id=row["user_id"], client_id=client_id,
            family_id=row["family_id"], requested_scope=row["scope"], nonce=row["nonce"], access_ttl=access_ttl,
            refresh_lifetime=refresh_lifetime,
        )
    if grant == "refresh_token":
        row = await service.rotate_refresh_token(conn, token=form.get("refresh_token") or "", client_id=client_id)
        return await token_response(
            conn, keyring=keyring, issuer=issuer, user_id=row["user_id"], client_id=client_id,
            family_id=row["family_id"], requested_scope=row["scope"], nonce=None, access_ttl=access_ttl,
            refresh_lifetime=refresh_lifetime,
        )
    raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code or refresh_token")
