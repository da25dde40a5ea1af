"""The identity module's authenticators, added to `app.state.authenticators`.

- API tokens (`alai_…`): looked up by hash, cached for a few seconds per replica so
  that a busy agent does not cost a query per request (revocation takes effect
  within ALAI_API_TOKEN_CACHE_SECONDS everywhere).
- Built-in access tokens (JWT, typ at+jwt, our issuer): verified against the key ring.
- External access tokens (when ALAI_OIDC_AUTHORITY is set): verified by
  ExternalVerifier, mapped to a local user (cached likewise).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import structlog
from fastapi import FastAPI, Request

from alai.server.deps import Principal
from alai.server.identity import credentials, external, jwt_tokens, service
from alai.server.problems import ProblemError

log = structlog.get_logger("alai.identity")


class TtlCache:
    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._items: dict[str, tuple[float, Any]] = {}

    def get(self, key: str) -> Any | None:
        item = self._items.get(key)
        if item is None or time.monotonic() - item[0] >= self.seconds:
            return None
        return item[1]

    def put(self, key: str, value: Any) -> None:
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[key] = (time.monotonic(), value)


def api_token_authenticator(app: FastAPI):
    cache = TtlCache(app.state.settings.api_token_cache_seconds)

    async def authenticate(_: Request, token: str) -> Principal | None:
        if not token.startswith(credentials.API_TOKEN_PREFIX):
            return None
        key = credentials.digest(token)
        principal = cache.get(key)
        if principal is None:
            async with app.state.pool.connection() as conn:
                row = await service.find_api_token(conn, token=token)
                if row is None:
                    return None
                await service.touch_api_token(conn, token_id=row["id"])
            principal = Principal(subject=f"token:{row['id']}", kind="api-token", scopes=frozenset(row["scopes"]),
                                  name=row["name"])
            cache.put(key, principal)
        return principal

    return authenticate


class VerifiedTokens:
    """Principals of JWTs already verified, until the token expires (bounded, per replica).

    Verifying an RS256 signature costs more than the rest of a small request; an agent
    sends the same access token many times. Access tokens cannot be revoked before
    they expire, so remembering a verdict until `exp` changes nothing about security.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._items: dict[str, tuple[float, Principal]] = {}

    def get(self, token: str) -> Principal | None:
        item = self._items.get(token)
        if item is None:
            return None
        if item[0] <= time.time():
            self._items.pop(token, None)
            return None
        return item[1]

    def put(self, token: str, principal: Principal, expires_at: float) -> None:
        if len(self._items) >= self.max_entries:
            self._items.clear()
        self._items[token] = (expires_at, principal)


def builtin_jwt_authenticator(app: FastAPI):
    issuer = app.state.settings.issuer
    verified = VerifiedTokens()

    async def authenticate(_: Request, token: str) -> Principal | None:
        cached = verified.get(token)
        if cached is not None:
            return cached
        if token.count(".") != 2 or jwt_tokens.unverified_issuer(token) != issuer:
            return None
        keyring = app.state.keyring
        kid = jwt_tokens.unverified_kid(token)
        if kid and keyring.get(kid) is None and keyring.may_reload_for_unknown_kid():
            # Rotated on another replica since we last looked.
            async with app.state.pool.connection() as conn:
                await keyring.reload(conn)
        try:
            claims = jwt_tokens.verify_access_token(keyring, token, issuer=issuer)
        except jwt.InvalidTokenError as error:
            raise ProblemError(401, f"the access token is not valid ({error}); run `alai login` again",
                               headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        if claims.get("alai_kind") == "agent":  # a run's token (jwt_tokens.agent_token)
            principal = Principal(subject=str(claims["sub"]), kind="agent",
                                  scopes=frozenset(str(claims.get("scope", "")).split()), name=str(claims["agent"]),
                                  secret_paths=tuple(str(path) for path in claims.get("secret_paths") or ()))
        else:
            principal = Principal(subject=str(claims["sub"]), kind="user",
                                  scopes=frozenset(str(claims.get("scope", "")).split()),
                                  name=claims.get("email") or claims.get("name") or str(claims["sub"]))
        verified.put(token, principal, float(claims["exp"]))
        return principal

    return authenticate


def external_jwt_authenticator(app: FastAPI, verifier: external.ExternalVerifier):
    cache = TtlCache(60.0)

    async def authenticate(_: Request, token: str) -> Principal | None:
        if token.count(".") != 2:
            return None
        try:
            identity = await verifier.verify(token)
        except external.ExternalTokenInvalid as error:
            raise ProblemError(401, f"the access token is not valid ({error}); run `alai login` again",
                               headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        except external.ExternalSignInRefused as error:
            raise ProblemError(403, str(error), slug="sign-in-refused") from None
        except external.ExternalIssuerUnavailable as error:
            raise ProblemError(503, str(error), headers={"Retry-After": "10"}) from None
        key = f"{identity.issuer}|{identity.subject}"
        principal = cache.get(key)
        if principal is None:
            async with app.state.pool.connection() as conn:
                user = await service.upsert_external_user(
                    conn, issuer=identity.issuer, subject=identity.subject, email=identity.email,
                    name=identity.name, admin=identity.admin,
                )
            if user.disabled:
                raise ProblemError(403, f"the account {user.username} is disabled", slug="sign-in-refused")
            principal = Principal(subject=user.id, kind="user", scopes=frozenset(user.scopes),
                                  name=user.email or user.username)
            cache.put(key, principal)
        return principal

    return authenticate


def user_id(principal: Principal) -> uuid.UUID | None:
    try:
        return uuid.UUID(principal.subject) if principal.kind == "user" else None
    except ValueError:
        return None
