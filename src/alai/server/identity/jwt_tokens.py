"""The built-in issuer's JWTs: signing access and ID tokens, and verifying access tokens."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from alai.server.identity.keys import ALGORITHM, KeyRing

ACCESS_TOKEN_AUDIENCE = "alai"
LEEWAY_SECONDS = 30


class NoSigningKey(RuntimeError):
    pass


def sign(keyring: KeyRing, claims: dict[str, Any], *, typ: str = "JWT") -> str:
    key = keyring.active
    if key is None or key.private_key is None:
        raise NoSigningKey("no active signing key; the identity module did not start properly")
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": typ})


def access_token(
    keyring: KeyRing, *, issuer: str, subject: str, scope: str, client_id: str, ttl: int,
    name: str | None, email: str | None,
) -> str:
    now = int(time.time())
    claims = {
        "iss": issuer, "sub": subject, "aud": ACCESS_TOKEN_AUDIENCE, "iat": now, "nbf": now, "exp": now + ttl,
        "jti": uuid.uuid4().hex, "scope": scope, "client_id": client_id, "name": name, "email": email,
    }
    # RFC 9068 names the type so an ID token can never pass for an access token.
    return sign(keyring, {k: v for k, v in claims.items() if v is not None}, typ="at+jwt")


def agent_token(keyring: KeyRing, *, issuer: str, agent: str, run_id: int, secret_paths: list[str],
                ttl: int) -> str:
    """A run's own credential, handed to the command that executes it: it may read the
    secrets its agent's definition lists, nothing else, until the run's deadline."""
    now = int(time.time())
    claims = {"iss": issuer, "sub": f"agent:{agent}", "aud": ACCESS_TOKEN_AUDIENCE, "iat": now, "nbf": now,
              "exp": now + ttl, "jti": uuid.uuid4().hex, "scope": "secrets:read", "alai_kind": "agent",
              "agent": agent, "run": run_id, "secret_paths": secret_paths}
    return sign(keyring, claims, typ="at+jwt")


def id_token(
    keyring: KeyRing, *, issuer: str, subject: str, client_id: str, nonce: str | None, ttl: int,
    name: str | None, email: str | None,
) -> str:
    now = int(time.time())
    claims = {"iss": issuer, "sub": subject, "aud": client_id, "iat": now, "exp": now + ttl, "auth_time": now,
              "nonce": nonce, "name": name, "email": email}
    return sign(keyring, {k: v for k, v in claims.items() if v is not None})


def unverified_kid(token: str) -> str | None:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        return None
    kid = header.get("kid")
    return kid if isinstance(kid, str) else None


def unverified_issuer(token: str) -> str | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


def verify_access_token(keyring: KeyRing, token: str, *, issuer: str) -> dict[str, Any]:
    """Claims of a valid access token of ours; raises jwt.InvalidTokenError otherwise."""
    header = jwt.get_unverified_header(token)
    if header.get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("not an access token")
    key = keyring.get(header.get("kid") or "")
    if key is None:
        raise jwt.InvalidTokenError("unknown signing key")
    return jwt.decode(
        token, key.public_key, algorithms=[ALGORITHM], audience=ACCESS_TOKEN_AUDIENCE, issuer=issuer,
        leeway=LEEWAY_SECONDS, options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub"]},
    )
