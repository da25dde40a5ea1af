"""Users, API tokens, authorization codes and refresh-token families (SQL lives here).

Functions take the connection keyword-only and never commit; callers own transactions.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg import AsyncConnection, errors

from alai.server.identity import credentials
from alai.server.problems import ProblemError
from alai.wire.identity import ADMIN_SCOPE, DEFAULT_USER_SCOPES, PROFILE_SCOPE, ApiToken, ApiTokenCreated, User

_hasher = PasswordHasher()
# Verifying against this keeps a wrong username as slow as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")
# Argon2 runs in worker threads (never on the event loop), at most this many at once:
# each takes ~90 ms and 64 MiB.
_HASHING_SLOTS = threading.BoundedSemaphore(4)


def _verify(stored: str, password: str) -> bool:
    with _HASHING_SLOTS:
        try:
            return _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False


def _hash(password: str) -> str:
    with _HASHING_SLOTS:
        return _hasher.hash(password)

USER_COLUMNS = ("id, username, email, display_name, scopes, external_issuer, disabled, created_at, "
                "last_login_at, password_hash")
# A refresh token presented again this soon after its rotation is taken for a race
# between two processes of the same client, not for theft (Auth0's "reuse interval").
REUSE_GRACE = timedelta(seconds=10)
TOKEN_COLUMNS = "id, name, token_prefix, scopes, created_by, created_at, expires_at, revoked_at, last_used_at"


class OAuthError(Exception):
    """An OAuth 2.0 error response (RFC 6749 §5.2): `error` code and a description."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _user(row: dict[str, Any]) -> User:
    return User(**{**{k: v for k, v in row.items() if k != "password_hash"}, "id": str(row["id"])})


def user_scopes(*, admin: bool) -> list[str]:
    return [*DEFAULT_USER_SCOPES, *([ADMIN_SCOPE] if admin else [])]


# -- users --------------------------------------------------------------------------


async def create_user(
    conn: AsyncConnection, *, username: str, password: str | None, email: str | None = None,
    display_name: str | None = None, admin: bool = False,
) -> User:
    try:
        cursor = await conn.execute(
            f"""
            INSERT INTO identity_users (id, username, email, display_name, password_hash, scopes)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING {USER_COLUMNS}
            """,
            (uuid.uuid4(), username, email, display_name, await anyio.to_thread.run_sync(_hash, password)
             if password else None, user_scopes(admin=admin)),
        )
    except errors.UniqueViolation:
        raise ProblemError(409, f"a user named {username!r} already exists", slug="user-exists") from None
    return _user(await cursor.fetchone())


async def list_users(conn: AsyncConnection) -> list[User]:
    cursor = await conn.execute(f"SELECT {USER_COLUMNS} FROM identity_users ORDER BY username")
    return [_user(row) for row in await cursor.fetchall()]


async def get_user(conn: AsyncConnection, *, user_id: uuid.UUID | str) -> User | None:
    cursor = await conn.execute(f"SELECT {USER_COLUMNS} FROM identity_users WHERE id = %s", (user_id,))
    row = await cursor.fetchone()
    return _user(row) if row else None


async def authenticate_password(conn: AsyncConnection, *, username: str, password: str) -> User | None:
    cursor = await conn.execute(
        f"SELECT {USER_COLUMNS} FROM identity_users WHERE lower(username) = lower(%s) OR lower(email) = lower(%s)",
        (username, username),
    )
    row = await cursor.fetchone()
    stored = row["password_hash"] if row and row["password_hash"] else _DUMMY_HASH
    if not await anyio.to_thread.run_sync(_verify, stored, password):
        return None
    if row is None or row["disabled"] or not row["password_hash"]:
        return None
    if _hasher.check_needs_rehash(stored):
        await conn.execute("UPDATE identity_users SET password_hash = %s WHERE id = %s",
                           (await anyio.to_thread.run_sync(_hash, password), row["id"]))
    await conn.execute("UPDATE identity_users SET last_login_at = now() WHERE id = %s", (row["id"],))
    return _user(row)


async def upsert_external_user(
    conn: AsyncConnection, *, issuer: str, subject: str, email: str | None, name: str | None, admin: bool,
) -> User:
    """The local user of an external identity, created on first sight.

    Never linked to an existing account by email: that would let whoever controls an
    issuer's email claim take over a local account. A taken username gets a suffix.
    """
    cursor = await conn.execute(
        f"""
        UPDATE identity_users SET email = %s, display_name = %s, scopes = %s, last_login_at = now()
        WHERE external_issuer = %s AND external_subject = %s RETURNING {USER_COLUMNS}
        """,
        # Scopes follow the configuration on every sign-in: removing someone from
        # ALAI_OIDC_ADMIN_EMAILS takes their admin scope away.
        (email, name, user_scopes(admin=admin), issuer, subject),
    )
    row = await cursor.fetchone()
    if row:
        return _user(row)
    base = email or f"{subject}@external"
    for candidate in (base, f"{base}~{credentials.digest(issuer)[:6]}", f"{base}~{subject[:12]}"):
        try:
            async with conn.transaction():
                cursor = await conn.execute(
                    f"""
                    INSERT INTO identity_users (id, username, email, display_name, external_issuer, external_subject,
                                                scopes, last_login_at)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, now())
                    ON CONFLICT (external_issuer, external_subject) DO UPDATE SET last_login_at = now()
                    RETURNING {USER_COLUMNS}
                    """,
                    (uuid.uuid4(), candidate, email, name, issuer, subject, user_scopes(admin=admin)),
                )
                return _user(await cursor.fetchone())
        except errors.UniqueViolation:
            continue
    raise ProblemError(409, f"cannot create a local account for {base}: the usernames are taken")


# -- API tokens ---------------------------------------------------------------------


def _api_token(row: dict[str, Any]) -> ApiToken:
    return ApiToken(**{**row, "id": str(row["id"]), "prefix": row["token_prefix"]})


async def create_api_token(
    conn: AsyncConnection, *, name: str, scopes: list[str], created_by: str, expires_in: timedelta | None,
) -> ApiTokenCreated:
    token = credentials.new_api_token()
    granted = sorted({*scopes, PROFILE_SCOPE})
    cursor = await conn.execute(
        f"""
        INSERT INTO identity_api_tokens (id, name, token_hash, token_prefix, scopes, created_by, expires_at)
        VALUES (%s, %s, %s, %s, %s, %s, now() + %s) RETURNING {TOKEN_COLUMNS}
        """,
        (uuid.uuid4(), name, credentials.digest(token), token[:12], granted, created_by, expires_in),
    )
    return ApiTokenCreated(**_api_token(await cursor.fetchone()).model_dump(), token=token)


async def list_api_tokens(conn: AsyncConnection, *, include_revoked: bool = False) -> list[ApiToken]:
    where = "" if include_revoked else "WHERE revoked_at IS NULL"
    cursor = await conn.execute(f"SELECT {TOKEN_COLUMNS} FROM identity_api_tokens {where} ORDER BY created_at")
    return [_api_token(row) for row in await cursor.fetchall()]


async def revoke_api_token(conn: AsyncConnection, *, token_id: str) -> ApiToken:
    try:
        parsed = uuid.UUID(token_id)
    except ValueError:
        raise ProblemError(404, f"no API token with id {token_id!r}") from None
    cursor = await conn.execute(
        f"UPDATE identity_api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s RETURNING {TOKEN_COLUMNS}",
        (parsed,),
    )
    row = await cursor.fetchone()
    if row is None:
        raise ProblemError(404, f"no API token with id {token_id!r}")
    return _api_token(row)


async def find_api_token(conn: AsyncConnection, *, token: str) -> dict[str, Any] | None:
    """The live token row for a presented token (not revoked, not expired), if any."""
    cursor = await conn.execute(
        """
        SELECT id, name, scopes FROM identity_api_tokens
        WHERE token_hash = %s AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
        """,
        (credentials.digest(token),),
    )
    return await cursor.fetchone()


async def touch_api_token(conn: AsyncConnection, *, token_id: uuid.UUID) -> None:
    # At most one write a minute per token: last-used is for people, not an audit log.
    await conn.execute(
        "UPDATE identity_api_tokens SET last_used_at = now() "
        "WHERE id = %s AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (token_id,),
    )


# -- authorization codes and refresh tokens ----------------------------------------------


async def create_auth_code(
    conn: AsyncConnection, *, client_id: str, user_id: str, redirect_uri: str, code_challenge: str,
    scope: str, nonce: str | None, lifetime: timedelta,
) -> str:
    code = credentials.random_token()
    await conn.execute(
        """
        INSERT INTO identity_auth_codes (code_hash, client_id, user_id, redirect_uri, code_challenge, scope, nonce,
                                         family_id, expires_at)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now() + %s)
        """,
        (credentials.digest(code), client_id, user_id, redirect_uri, code_challenge, scope, nonce, uuid.uuid4(),
         lifetime),
    )
    return code


async def redeem_auth_code(
    conn: AsyncConnection, *, code: str, client_id: str, redirect_uri: str, code_verifier: str,
) -> dict[str, Any]:
    """Checks and consumes a code. A reused code also revokes what it was exchanged for."""
    cursor = await conn.execute(
        "SELECT *, expires_at < now() AS expired FROM identity_auth_codes WHERE code_hash = %s FOR UPDATE",
        (credentials.digest(code),),
    )
    row = await cursor.fetchone()
    if row is None:
        raise OAuthError("invalid_grant", "unknown authorization code")
    if row["used_at"] is not None:
        await revoke_family(conn, family_id=row["family_id"])
        raise OAuthError("invalid_grant", "authorization code already used; the tokens issued for it are revoked")
    await conn.execute("UPDATE identity_auth_codes SET used_at = now() WHERE code_hash = %s", (row["code_hash"],))
    if row["expired"]:
        raise OAuthError("invalid_grant", "authorization code expired; start the login again")
    if row["client_id"] != client_id:
        raise OAuthError("invalid_grant", "authorization code was issued to another client")
    if row["redirect_uri"] != redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri does not match the one of the authorization request")
    if not code_verifier or credentials.pkce_challenge(code_verifier) != row["code_challenge"]:
        raise OAuthError("invalid_grant", "PKCE verification failed: code_verifier does not match code_challenge")
    return row


async def issue_refresh_token(
    conn: AsyncConnection, *, family_id: uuid.UUID, user_id: str, client_id: str, scope: str, lifetime: timedelta,
) -> str:
    token = credentials.random_token()
    await conn.execute(
        """
        INSERT INTO identity_refresh_tokens (token_hash, family_id, user_id, client_id, scope, expires_at)
        VALUES (%s, %s, %s, %s, %s, now() + %s)
        """,
        (credentials.digest(token), family_id, user_id, client_id, scope, lifetime),
    )
    return token


async def rotate_refresh_token(conn: AsyncConnection, *, token: str, client_id: str) -> dict[str, Any]:
    """Consumes a refresh token. Presenting a consumed one revokes its whole family."""
    cursor = await conn.execute(
        "SELECT *, expires_at < now() AS expired, used_at > now() - %s AS just_used "
        "FROM identity_refresh_tokens WHERE token_hash = %s FOR UPDATE",
        (REUSE_GRACE, credentials.digest(token)),
    )
    row = await cursor.fetchone()
    if row is None:
        raise OAuthError("invalid_grant", "unknown refresh token; run `alai login`")
    if row["revoked_at"] is not None:
        raise OAuthError("invalid_grant", "refresh token revoked; run `alai login`")
    if row["used_at"] is not None and row["just_used"] and row["client_id"] == client_id and not row["expired"]:
        # Two requests of one client racing with the same token (two CLI processes):
        # within a few seconds it is a race, not theft; the family goes on.
        return row
    if row["used_at"] is not None:
        await revoke_family(conn, family_id=row["family_id"])
        raise OAuthError("invalid_grant", "refresh token reuse detected; the session is revoked: run `alai login`")
    if row["expired"]:
        raise OAuthError("invalid_grant", "refresh token expired; run `alai login`")
    if row["client_id"] != client_id:
        raise OAuthError("invalid_grant", "refresh token was issued to another client")
    await conn.execute("UPDATE identity_refresh_tokens SET used_at = now() WHERE token_hash = %s", (row["token_hash"],))
    return row


async def revoke_family(conn: AsyncConnection, *, family_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE identity_refresh_tokens SET revoked_at = now() WHERE family_id = %s AND revoked_at IS NULL",
        (family_id,),
    )


async def revoke_refresh_token(conn: AsyncConnection, *, token: str) -> None:
    """RFC 7009: revoking a refresh token ends its whole session; unknown tokens are no error."""
    cursor = await conn.execute(
        "SELECT family_id FROM identity_refresh_tokens WHERE token_hash = %s", (credentials.digest(token),)
    )
    row = await cursor.fetchone()
    if row:
        await revoke_family(conn, family_id=row["family_id"])


async def prune_expired(conn: AsyncConnection, *, now: datetime | None = None) -> None:
    await conn.execute("DELETE FROM identity_auth_codes WHERE expires_at < now() - interval '1 day'")
    await conn.execute("DELETE FROM identity_refresh_tokens WHERE expires_at < now() - interval '1 day'")
