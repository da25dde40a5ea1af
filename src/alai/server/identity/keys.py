"""The built-in issuer's signing keys: stored in the database, rotated without a cliff.

One key signs (retired_at IS NULL). Rotation retires it and creates a new one; a
retired key keeps verifying, and stays in the JWKS, until every token it signed has
expired (retired_at + the longest token lifetime + clock skew).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from psycopg import AsyncConnection

ALGORITHM = "RS256"
CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Any | None  # None for keys only used to verify
    public_key: Any
    public_jwk: dict[str, Any]
    active: bool


def _generate() -> tuple[str, str, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    kid = uuid.uuid4().hex[:16]
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, use="sig", alg=ALGORITHM)
    return kid, pem, jwk


async def ensure_active_key(conn: AsyncConnection) -> None:
    """Creates the first signing key if there is none (replicas may race: one wins)."""
    row = await (await conn.execute("SELECT 1 FROM identity_signing_keys WHERE retired_at IS NULL")).fetchone()
    if row:
        return
    kid, pem, jwk = _generate()
    await conn.execute(
        "INSERT INTO identity_signing_keys (kid, algorithm, private_pem, public_jwk) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT DO NOTHING",
        (kid, ALGORITHM, pem, json.dumps(jwk)),
    )


async def rotate(conn: AsyncConnection) -> str:
    """Retires the signing key and makes a new one; returns the new kid. Caller commits."""
    kid, pem, jwk = _generate()
    await conn.execute("UPDATE identity_signing_keys SET retired_at = now() WHERE retired_at IS NULL")
    await conn.execute(
        "INSERT INTO identity_signing_keys (kid, algorithm, private_pem, public_jwk) VALUES (%s, %s, %s, %s)",
        (kid, ALGORITHM, pem, json.dumps(jwk)),
    )
    return kid


async def list_keys(conn: AsyncConnection) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT kid, algorithm, created_at, retired_at FROM identity_signing_keys ORDER BY created_at"
    )
    return await cursor.fetchall()


async def load_usable(conn: AsyncConnection, *, longest_token_lifetime: timedelta) -> list[SigningKey]:
    """The active key and the retired ones that may still have live tokens."""
    cursor = await conn.execute(
        """
        SELECT kid, private_pem, public_jwk, retired_at IS NULL AS active
        FROM identity_signing_keys
        WHERE retired_at IS NULL OR retired_at > now() - %s
        ORDER BY created_at DESC
        """,
        (longest_token_lifetime + CLOCK_SKEW,),
    )
    keys = []
    for row in await cursor.fetchall():
        jwk = row["public_jwk"] if isinstance(row["public_jwk"], dict) else json.loads(row["public_jwk"])
        private = serialization.load_pem_private_key(row["private_pem"].encode(), None) if row["active"] else None
        keys.append(SigningKey(kid=row["kid"], private_key=private,
                               public_key=RSAAlgorithm.from_jwk(json.dumps(jwk)), public_jwk=jwk, active=row["active"]))
    return keys


class KeyRing:
    """This replica's cached view of the signing keys; reloaded when a kid is unknown."""

    RELOAD_INTERVAL = 30.0
    MIN_RELOAD_GAP = 1.0

    def __init__(self, *, longest_token_lifetime: timedelta) -> None:
        self.longest_token_lifetime = longest_token_lifetime
        self._keys: dict[str, SigningKey] = {}
        self._active: SigningKey | None = None
        self._loaded_at = 0.0

    async def reload(self, conn: AsyncConnection) -> None:
        keys = await load_usable(conn, longest_token_lifetime=self.longest_token_lifetime)
        self._keys = {key.kid: key for key in keys}
        self._active = next((key for key in keys if key.active), None)
        self._loaded_at = time.monotonic()

    def stale(self) -> bool:
        return time.monotonic() - self._loaded_at > self.RELOAD_INTERVAL

    def may_reload_for_unknown_kid(self) -> bool:
        return time.monotonic() - self._loaded_at > self.MIN_RELOAD_GAP

    def get(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    @property
    def active(self) -> SigningKey | None:
        return self._active

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk for key in self._keys.values()]}
