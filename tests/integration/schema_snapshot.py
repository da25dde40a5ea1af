"""A readable description of a database's schema, compared with tests/integration/schema.expected."""

from __future__ import annotations

import psycopg

COLUMNS = """
SELECT c.table_name, c.column_name, c.data_type, c.udt_name, c.is_nullable, coalesce(c.column_default, '')
FROM information_schema.columns c
JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
ORDER BY c.table_name, c.ordinal_position
"""
INDEXES = "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY tablename, indexname"
CONSTRAINTS = """
SELECT rel.relname, con.conname, pg_get_constraintdef(con.oid)
FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
JOIN pg_namespace ns ON ns.oid = rel.relnamespace
-- PostgreSQL 18 lists NOT NULL as constraints, 15 does not: the columns already say it.
WHERE ns.nspname = 'public' AND con.contype <> 'n' ORDER BY rel.relname, con.conname
"""
FUNCTIONS = """
SELECT p.proname, pg_get_function_identity_arguments(p.oid)
FROM pg_proc p JOIN pg_namespace ns ON ns.oid = p.pronamespace
WHERE ns.nspname = 'public' ORDER BY 1, 2
"""
TRIGGERS = """
SELECT event_object_table, trigger_name, event_manipulation, action_timing
FROM information_schema.triggers WHERE trigger_schema = 'public' ORDER BY 1, 2, 3
"""


def describe(url: str) -> str:
    lines: list[str] = []
    with psycopg.connect(url) as conn:
        for table, column, data_type, udt, nullable, default in conn.execute(COLUMNS):
            kind = udt if data_type in ("USER-DEFINED", "ARRAY") else data_type
            lines.append(f"column {table}.{column} {kind}{' NOT NULL' if nullable == 'NO' else ''}"
                         f"{' DEFAULT ' + default if default else ''}")
        for table, name, definition in conn.execute(INDEXES):
            lines.append(f"index {table}.{name} {definition}")
        for table, name, definition in conn.execute(CONSTRAINTS):
            lines.append(f"constraint {table}.{name} {definition}")
        for name, args in conn.execute(FUNCTIONS):
            lines.append(f"function {name}({args})")
        for table, name, event, timing in conn.execute(TRIGGERS):
            lines.append(f"trigger {table}.{name} {timing} {event}")
    return "\n".join(lines) + "\n"
