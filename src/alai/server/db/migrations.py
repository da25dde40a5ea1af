"""Versioned SQL migrations, one numbered series per module.

Files live in each module's package: `alai/server/<module>/migrations/0001_name.sql`.
Modules are migrated in dependency order, each file in its own transaction, and all
of it under one advisory lock so that replicas starting together cannot race: the
second waits, then finds nothing left to do.

An applied file must never change; its checksum is recorded and a change is refused.
A file whose first line is `-- alai:no-transaction` runs outside a transaction (for
statements such as CREATE INDEX CONCURRENTLY); keep such a file to one statement.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg.rows import dict_row

from alai.server import modules

# An arbitrary constant that names "alai migrations" among advisory locks.
MIGRATION_LOCK_KEY = 7_140_551_208_144_210_001
FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
NO_TRANSACTION_MARK = "-- alai:no-transaction"

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS alai_migrations (
    module      text        NOT NULL,
    version     integer     NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer     NOT NULL,
    PRIMARY KEY (module, version)
)
"""


class MigrationError(RuntimeError):
    """Migrations cannot be applied as they stand (a bad file, a changed file)."""


@dataclass(frozen=True)
class Migration:
    module: str
    version: int
    name: str
    sql: str

    @property
    def key(self) -> str:
        return f"{self.module}/{self.version:04d}_{self.name}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def transactional(self) -> bool:
        return not self.sql.lstrip().startswith(NO_TRANSACTION_MARK)


@dataclass(frozen=True)
class Plan:
    applied: list[str]
    pending: list[Migration]
    unknown: list[str]
    changed: list[str]


def discover() -> list[Migration]:
    """Every migration this build knows, in the order they must be applied."""
    found: list[Migration] = []
    for module in modules.all_modules():
        package = f"alai.server.{module.name}.migrations"
        try:
            folder = resources.files(package)
        except ModuleNotFoundError:
            continue
        versions: set[int] = set()
        for entry in sorted(folder.iterdir(), key=lambda item: item.name):
            if not entry.name.endswith(".sql"):
                continue
            match = FILE_PATTERN.match(entry.name)
            if not match:
                raise MigrationError(f"{package}: {entry.name} is not named NNNN_lower_snake.sql")
            version = int(match.group(1))
            if version in versions:
                raise MigrationError(f"{package}: two migrations numbered {version:04d}")
            versions.add(version)
            found.append(Migration(module.name, version, match.group(2), entry.read_text(encoding="utf-8")))
    return found


LEDGER_EXISTS = "SELECT to_regclass('alai_migrations') IS NOT NULL AS present"
LEDGER_ROWS = "SELECT module, version, name, checksum FROM alai_migrations"


def _applied(conn: psycopg.Connection) -> list[dict]:
    exists = conn.execute(LEDGER_EXISTS).fetchone()
    if not exists or not exists["present"]:
        return []
    return conn.execute(LEDGER_ROWS).fetchall()


async def applied_async(conn: psycopg.AsyncConnection) -> list[dict]:
    """The ledger's rows, read on an async connection with dict rows."""
    exists = await (await conn.execute(LEDGER_EXISTS)).fetchone()
    if not exists or not exists["present"]:
        return []
    return await (await conn.execute(LEDGER_ROWS)).fetchall()


def plan(conn: psycopg.Connection, known: list[Migration] | None = None) -> Plan:
    return compare(discover() if known is None else known, _applied(conn))


def compare(known: list[Migration], applied_rows: list[dict]) -> Plan:
    """What the database has against what this build knows."""
    applied = {(row["module"], row["version"]): row for row in applied_rows}
    by_key = {(m.module, m.version): m for m in known}
    changed = [m.key for k, m in by_key.items() if k in applied and applied[k]["checksum"] != m.checksum]
    unknown = sorted(f"{row['module']}/{row['version']:04d}_{row['name']}" for k, row in applied.items() if k not in by_key)
    pending = [m for m in known if (m.module, m.version) not in applied]
    done = [m.key for m in known if (m.module, m.version) in applied]
    return Plan(applied=done, pending=pending, unknown=unknown, changed=changed)


def migrate(
    conninfo: str,
    *,
    log: Callable[[str], None] = lambda message: None,
    known: list[Migration] | None = None,
) -> list[str]:
    """Apply every pending migration (of `known`, default: this build's); returns the keys applied now."""
    known = discover() if known is None else known
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(LEDGER_DDL)
            current = plan(conn, known)
            if current.changed:
                raise MigrationError(
                    "applied migrations were edited afterwards: " + ", ".join(current.changed)
                    + "; restore them and put the change in a new migration"
                )
            for migration in current.pending:
                log(f"applying {migration.key}")
                started = time.monotonic()
                try:
                    if migration.transactional:
                        with conn.transaction():
                            conn.execute(migration.sql)
                            _record(conn, migration, started)
                    else:
                        conn.execute(migration.sql)
                        _record(conn, migration, started)
                except psycopg.Error as error:
                    raise MigrationError(f"migration {migration.key} failed: {error}") from error
                applied_now.append(migration.key)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


def status(conninfo: str) -> Plan:
    with psycopg.connect(conninfo, autocommit=True, row_factory=dict_row) as conn:
        return plan(conn)


def _record(conn: psycopg.Connection, migration: Migration, started: float) -> None:
    conn.execute(
        "INSERT INTO alai_migrations (module, version, name, checksum, duration_ms) VALUES (%s, %s, %s, %s, %s)",
        (migration.module, migration.version, migration.name, migration.checksum,
         int((time.monotonic() - started) * 1000)),
    )
