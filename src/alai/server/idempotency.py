"""Idempotency-Key for POSTs that create work: a retried request is stored once.

Each module keeps its own table (principal, key, request_hash, status, response).
The first request inserts a placeholder row in its own transaction; a concurrent
retry with the same key waits on that row (PostgreSQL's ON CONFLICT waits for the
inserting transaction), then reads the stored response. A key reused with a different
request is refused (422), as Stripe and the IETF draft do.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from alai.server.problems import ProblemError

KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")
PENDING = 0


@dataclass(frozen=True)
class Stored:
    status: int
    response: Any


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def check_key(key: str) -> str:
    if not KEY_PATTERN.match(key):
        raise ProblemError(400, "Idempotency-Key must be 1-200 visible ASCII characters", slug="bad-idempotency-key")
    return key


async def claim(conn: AsyncConnection, *, table: str, principal: str, key: str, fingerprint: str) -> Stored | None:
    """None: this request is the first and must do the work (then `record`). Else the stored answer."""
    inserted = await (await conn.execute(
        f"INSERT INTO {table} (principal, key, request_hash, status, response) VALUES (%s, %s, %s, %s, 'null') "
        "ON CONFLICT DO NOTHING RETURNING key", (principal, key, fingerprint, PENDING))).fetchone()
    if inserted:
        return None
    row = await (await conn.execute(
        f"SELECT request_hash, status, response FROM {table} WHERE principal = %s AND key = %s",
        (principal, key))).fetchone()
    if row["request_hash"] != fingerprint:
        raise ProblemError(422, "this Idempotency-Key was used for a different request; use a new key",
                           slug="idempotency-key-reused")
    return Stored(status=row["status"], response=row["response"])


async def record(conn: AsyncConnection, *, table: str, principal: str, key: str, status: int, response: Any) -> None:
    await conn.execute(f"UPDATE {table} SET status = %s, response = %s WHERE principal = %s AND key = %s",
                       (status, Jsonb(response), principal, key))


async def prune(conn: AsyncConnection, *, table: str, older_than_hours: int = 24) -> None:
    await conn.execute(f"DELETE FROM {table} WHERE created_at < now() - make_interval(hours => %s)",
                       (older_than_hours,))
