"""Test databases: one PostgreSQL per session, a migrated template, a clone per module.

PostgreSQL is real in every test: the embedded one by default, or the server named
by ALAI_TEST_DATABASE_URL (any database on it; we create our own beside it).
"""

from __future__ import annotations

import uuid

import psycopg
from psycopg import conninfo, sql


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials, another database (works for socket URLs too)."""
    return conninfo.make_conninfo(url, dbname=dbname)


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def create_database(admin_url: str, name: str, *, template: str | None = None) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template))
        conn.execute(statement)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
