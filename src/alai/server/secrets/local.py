"""The local backend: values encrypted with AES-256-GCM in PostgreSQL.

The master key is 32 random bytes, given base64-encoded (`ALAI_MASTER_KEY`). Each
value has its own random 96-bit nonce; the path is the associated data. `key_id`
(the first 16 hex digits of SHA-256 of the key) tells "encrypted under another key"
apart from "corrupt".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg_pool import AsyncConnectionPool

from alai.server.secrets.backend import BackendDown, Listed, NotFound

KEY_BYTES = 32


class MasterKeyError(ValueError):
    pass


def parse_master_key(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4),
                               altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError("ALAI_MASTER_KEY is not base64; make one with `alai admin secrets new-key`") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"ALAI_MASTER_KEY must be {KEY_BYTES} bytes (base64), not {len(key)}; "
                             "make one with `alai admin secrets new-key`")
    return key


def new_master_key() -> str:
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:16]


class LocalBackend:
    kind = "local"

    def __init__(self, pool: AsyncConnectionPool, key: bytes | None, *, missing_reason: str | None = None,
                 read_only: bool = False) -> None:
        self._pool = pool
        self._aead = AESGCM(key) if key is not None else None
        self._key_id = key_id(key) if key is not None else None
        self._missing = missing_reason or "no master key (set ALAI_MASTER_KEY)"
        self.read_only = read_only

    def _need_key(self) -> AESGCM:
        if self._aead is None:
            raise BackendDown(self._missing)
        return self._aead

    async def get(self, path: str) -> str:
        aead = self._need_key()
        async with self._pool.connection() as conn:
            row = await (await conn.execute(
                "SELECT key_id, nonce, ciphertext FROM secret_values WHERE path = %s", (path,))).fetchone()
        if row is None:
            raise NotFound(f"no secret at {path}")
        if row["key_id"] != self._key_id:
            raise BackendDown(f"{path} was stored under another master key ({row['key_id']}); "
                              "is ALAI_MASTER_KEY the right one?")
        try:
            return aead.decrypt(row["nonce"], row["ciphertext"], path.encode()).decode()
        except InvalidTag:
            raise BackendDown(f"{path} does not decrypt: the stored value is corrupt") from None

    async def put(self, path: str, value: str, *, actor: str) -> None:
        aead = self._need_key()
        nonce = os.urandom(12)
        ciphertext = aead.encrypt(nonce, value.encode(), path.encode())
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO secret_values (path, key_id, nonce, ciphertext, updated_by) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (path) DO UPDATE SET key_id = excluded.key_id, nonce = excluded.nonce, "
                "ciphertext = excluded.ciphertext, version = secret_values.version + 1, updated_at = now(), "
                "updated_by = excluded.updated_by", (path, self._key_id, nonce, ciphertext, actor))

    async def delete(self, path: str) -> None:
        async with self._pool.connection() as conn:
            result = await conn.execute("DELETE FROM secret_values WHERE path = %s", (path,))
        if result.rowcount == 0:
            raise NotFound(f"no secret at {path}")

    async def list(self, prefix: str) -> list[Listed]:
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT path, updated_at FROM secret_values WHERE starts_with(path, %s) ORDER BY path",
                (prefix,))).fetchall()
        return [Listed(path=row["path"], updated_at=row["updated_at"]) for row in rows]

    async def check(self) -> str | None:
        return None if self._aead is not None else self._missing

    async def close(self) -> None:
        return None
