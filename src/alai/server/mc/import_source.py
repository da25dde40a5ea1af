"""Reading a legacy Mission Control SQLite file and working out what its tables mean.

Every table (but SQLite's own `sqlite_*` bookkeeping) is read whole, with a stable key
per row: its primary key where it has one, else its rowid. Which table holds tasks,
comments and history, and which column is which field, is detected from names and
synonyms; a mapping (`--map mapping.yaml`) overrides any of it:

    tables:     {tasks: legacy_tasks, comments: notes, history: null}   # null: no such table
    columns:    {tasks: {title: name, project: null}}                   # target field: source column
    statuses:   {open: todo, "In Progress": in_progress}
    priorities: {high: 1, low: 3}
    id_prefix:  "MC-"                                                   # for numeric legacy ids
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alai.server.mc import import_values
from alai.server.problems import ProblemError

SQLITE_MAGIC = b"SQLite format 3\x00"
ROLES = ("tasks", "comments", "history")
TARGET_TABLES = {"tasks": "mc_tasks", "comments": "mc_comments", "history": "mc_history"}

# Target field -> source column names that mean it, best first (compared lower-case,
# without "_", "-" and spaces, so createdAt, created_at and "Created At" all match).
TASK_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id", "task_id", "key", "uid", "uuid"),
    "title": ("title", "name", "summary", "subject"),
    "description": ("description", "body", "details", "notes", "desc", "content"),
    "status": ("status", "state"),
    "priority": ("priority", "prio"),
    "assignee": ("assignee", "assigned_to", "owner", "agent", "assigned"),
    "project": ("project", "project_name"),
    "labels": ("tags", "labels"),
    "parent_id": ("parent_id", "parent", "parent_task_id", "parent_task"),
    "created_at": ("created_at", "created", "created_on", "creation_date", "inserted_at"),
    "updated_at": ("updated_at", "modified", "updated", "modified_at", "last_modified"),
    "closed_at": ("completed_at", "closed_at", "done_at", "finished_at", "resolved_at"),
    "due_date": ("due_date", "due", "due_at", "deadline"),
    "metadata": ("metadata", "meta", "extra"),
    "created_by": ("created_by", "creator", "reporter", "author"),
    "archived_at": ("archived_at",),
}
TASK_REF = ("task_id", "task", "issue_id", "ticket_id")
COMMENT_FIELDS: dict[str, tuple[str, ...]] = {
    "task_id": TASK_REF,
    "author": ("author", "user", "created_by", "agent", "by", "username", "sender"),
    "body": ("body", "content", "text", "comment", "message"),
    "created_at": ("created_at", "created", "timestamp", "ts", "at", "date", "time"),
}
HISTORY_FIELDS: dict[str, tuple[str, ...]] = {
    "task_id": TASK_REF,
    "field": ("field", "attribute", "column", "property", "field_name"),
    "old_value": ("old_value", "old", "from", "previous", "before", "from_value"),
    "new_value": ("new_value", "new", "to", "value", "after", "to_value"),
    "changed_by": ("changed_by", "actor", "user", "author", "by", "agent"),
    "changed_at": ("changed_at", "created_at", "timestamp", "at", "ts", "date", "time"),
}
FIELDS = {"tasks": TASK_FIELDS, "comments": COMMENT_FIELDS, "history": HISTORY_FIELDS}
TABLE_NAMES = {
    "tasks": ("tasks", "task", "mc_tasks", "issues", "todos", "tickets"),
    "comments": ("task_comments", "comments", "mc_comments", "task_notes", "notes"),
    "history": ("task_history", "history", "mc_history", "task_changes", "audit_log", "task_events"),
}
MAPPING_KEYS = {"tables", "columns", "statuses", "priorities", "id_prefix"}


@dataclass
class SourceTable:
    name: str
    columns: list[str]
    rows: list[tuple] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    key_columns: list[str] = field(default_factory=list)
    error: str | None = None
    has_bad_text: bool = False  # some TEXT was not UTF-8 (see import_values.BadText)


@dataclass
class Detected:
    """Which source table plays which role, and its column of each target field."""

    tables: dict[str, str | None]
    columns: dict[str, dict[str, str]]
    statuses: dict[str, str]
    priorities: dict[str, int]
    id_prefix: str


def check_sqlite(path: Path) -> None:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except OSError as error:
        raise ProblemError(422, f"cannot read {path.name}: {error.strerror}") from None
    if magic != SQLITE_MAGIC:
        raise ProblemError(422, f"{path.name} is not an SQLite database (it must start with 'SQLite format 3')")


def norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def read_tables(path: Path, progress: Callable[[str, int, int], None] | None = None) -> list[SourceTable]:
    """Every user table of the file, rows and keys included (blocking: run it in a thread)."""
    check_sqlite(path)
    db = _open(path, "mode=ro")
    try:
        try:
            names = _table_names(db)
        except sqlite3.OperationalError:
            # A WAL database in a folder we cannot write to (no -shm can be made):
            # immutable mode reads it without one.
            db.close()
            db = _open(path, "mode=ro&immutable=1")
            names = _table_names(db)
        return [_read_table(db, name, progress) for name in names]
    except sqlite3.DatabaseError as error:
        raise ProblemError(422, f"{path.name} is not a readable SQLite database: {error}") from None
    finally:
        db.close()


def _open(path: Path, options: str) -> sqlite3.Connection:
    # Read-only: the file is never changed. Not `immutable` at first, which would
    # ignore the write-ahead log of a database the old tool still has open.
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?{options}", uri=True)
    except sqlite3.Error as error:
        raise ProblemError(422, f"{path.name} cannot be opened as SQLite: {error}") from None
    db.text_factory = import_values.decode_sqlite_text
    return db


def _table_names(db: sqlite3.Connection) -> list[str]:
    return [row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY name")]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _NotUtf8(Exception):
    pass


def _read_table(db: sqlite3.Connection, name: str, progress: Callable[[str, int, int], None] | None) -> SourceTable:
    # sqlite3's own UTF-8 decoding (C) first; a table with text that is not UTF-8
    # is read again through decode_sqlite_text, which keeps the raw bytes.
    db.text_factory = str
    try:
        return _read_table_as(db, name, progress)
    except _NotUtf8:
        db.text_factory = import_values.decode_sqlite_text
        return _read_table_as(db, name, progress)


def _read_table_as(db: sqlite3.Connection, name: str, progress: Callable[[str, int, int], None] | None) -> SourceTable:
    info = db.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
    columns = [row[1] for row in info]
    key_columns = [row[1] for row in sorted(info, key=lambda row: row[5]) if row[5] > 0]
    table = SourceTable(name=name, columns=columns, key_columns=key_columns)
    try:
        cursor = db.execute(f"SELECT rowid, * FROM {_quote(name)}")
        with_rowid = True
    except sqlite3.OperationalError:
        try:  # WITHOUT ROWID tables, and virtual tables that have no rowid
            cursor = db.execute(f"SELECT * FROM {_quote(name)}")
            with_rowid = False
        except sqlite3.DatabaseError as error:
            table.error = str(error)
            return table
    key_positions = [columns.index(column) for column in key_columns]
    bad_before = import_values.BadText.made
    seen: set[str] = set()
    total = db.execute(f"SELECT count(*) FROM {_quote(name)}").fetchone()[0] if progress else 0
    try:
        for raw in cursor:
            rowid, row = (raw[0], raw[1:]) if with_rowid else (None, raw)
            key = _row_key(row, key_positions, rowid, len(table.rows))
            if key in seen:  # e.g. 1 and '1' in an untyped key column
                key = f"{key}#row{len(table.rows) + 1}"
            seen.add(key)
            table.rows.append(row)
            table.keys.append(key)
            if progress and len(table.rows) % 2000 == 0:
                progress(f"read {name}", len(table.rows), total)
    except sqlite3.DatabaseError as error:
        if db.text_factory is str and "decode" in str(error):
            raise _NotUtf8 from None
        table.error = f"stopped after {len(table.rows)} rows: {error}"
    table.has_bad_text = import_values.BadText.made != bad_before
    if progress:
        progress(f"read {name}", len(table.rows), max(total, len(table.rows)))
    return table


def _row_key(row: tuple, key_positions: list[int], rowid: int | None, index: int) -> str:
    values = [row[position] for position in key_positions]
    if values and all(value is not None for value in values):
        if len(values) == 1:
            value = values[0]
            return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
        return json.dumps([import_values.jsonable(value) for value in values], ensure_ascii=False)
    return f"rowid:{rowid}" if rowid is not None else f"row:{index + 1}"


def detect(tables: list[SourceTable], mapping: dict[str, Any] | None, statuses: list[str]) -> Detected:
    """The roles and columns of the file, the mapping's choices first."""
    mapping = validate_mapping(mapping or {}, tables, statuses)
    by_name = {table.name: table for table in tables}
    chosen: dict[str, str | None] = {}
    for role in ROLES:
        if role in mapping.get("tables", {}):
            chosen[role] = mapping["tables"][role]
            continue
        taken = {name for name in chosen.values() if name}
        chosen[role] = _find_table(role, [t for t in tables if t.name not in taken and not t.error])
    columns: dict[str, dict[str, str]] = {}
    for role, name in chosen.items():
        if name is None:
            continue
        overrides = mapping.get("columns", {}).get(role, {})
        columns[role] = find_columns(FIELDS[role], by_name[name].columns, overrides)
    return Detected(
        tables=chosen, columns=columns,
        statuses={str(key): value for key, value in mapping.get("statuses", {}).items()},
        priorities={str(key): value for key, value in mapping.get("priorities", {}).items()},
        id_prefix=mapping.get("id_prefix", "MC-"),
    )


def _find_table(role: str, tables: list[SourceTable]) -> str | None:
    by_norm = {norm(table.name): table.name for table in tables}
    for candidate in TABLE_NAMES[role]:
        if norm(candidate) in by_norm:
            return by_norm[norm(candidate)]
    # No known name: the first table whose columns look the part.
    needs = {"tasks": ("title", "status"), "comments": ("task_id", "body"), "history": ("task_id", "field")}[role]
    for table in tables:
        found = find_columns(FIELDS[role], table.columns, {})
        if all(need in found for need in needs):
            return table.name
    return None


def find_columns(fields: dict[str, tuple[str, ...]], columns: list[str], overrides: dict[str, str | None]) -> dict[str, str]:
    found: dict[str, str] = {target: source for target, source in overrides.items() if source is not None}
    used = set(found.values())
    by_norm: dict[str, str] = {}
    for column in columns:
        by_norm.setdefault(norm(column), column)
    for target, synonyms in fields.items():
        if target in overrides:
            continue
        for synonym in synonyms:
            column = by_norm.get(norm(synonym))
            if column is not None and column not in used:
                found[target] = column
                used.add(column)
                break
    return found


def validate_mapping(mapping: Any, tables: list[SourceTable], statuses: list[str]) -> dict[str, Any]:
    """The mapping, checked against the file and the workflow; a mistake is a 422 before any write."""
    if not isinstance(mapping, dict):
        raise ProblemError(422, "the mapping must be a YAML/JSON object with tables, columns, statuses, priorities")
    unknown = set(mapping) - MAPPING_KEYS
    if unknown:
        raise ProblemError(422, f"unknown mapping key(s): {', '.join(sorted(map(str, unknown)))}; "
                                f"allowed: {', '.join(sorted(MAPPING_KEYS))}")
    check_tables_and_columns(mapping, tables, ROLES, FIELDS)
    for source, target in section(mapping, "statuses").items():
        if target not in statuses:
            raise ProblemError(422, f"mapping statuses.{source}: {target!r} is not a workflow status "
                                    f"({', '.join(statuses)})")
    for source, target in section(mapping, "priorities").items():
        if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target <= 4:
            raise ProblemError(422, f"mapping priorities.{source}: {target!r} must be a whole number from 0 to 4")
    if not isinstance(mapping.get("id_prefix", ""), str):
        raise ProblemError(422, "mapping id_prefix must be text, e.g. 'MC-'")
    return mapping


def check_mapped_columns(detected: Detected, tables: list[SourceTable]) -> None:
    """Columns named by the mapping must exist in the chosen tables."""
    by_name = {table.name: table for table in tables}
    for role, fields in detected.columns.items():
        table = by_name[detected.tables[role]]  # type: ignore[index]
        for target, source in fields.items():
            if source not in table.columns:
                raise ProblemError(422, f"mapping columns.{role}.{target}: table {table.name!r} has no column "
                                        f"{source!r} (it has {', '.join(table.columns)})")


def check_tables_and_columns(mapping: dict[str, Any], tables: list[SourceTable], roles: tuple[str, ...] | list[str],
                             fields: dict[str, Any]) -> None:
    """A mapping's `tables` and `columns` sections against the file and the roles'
    fields (shared with the HiveMind import); 422 on the first thing wrong."""
    names = {table.name for table in tables}
    for role, name in section(mapping, "tables").items():
        if role not in roles:
            raise ProblemError(422, f"mapping tables.{role}: the roles are {', '.join(roles)}")
        if name is not None and name not in names:
            raise ProblemError(422, f"mapping tables.{role}: the file has no table {name!r} "
                                    f"(it has {', '.join(sorted(names)) or 'none'})")
    for role, columns in section(mapping, "columns").items():
        if role not in roles:
            raise ProblemError(422, f"mapping columns.{role}: the roles are {', '.join(roles)}")
        if not isinstance(columns, dict):
            raise ProblemError(422, f"mapping columns.{role} must map target fields to source columns")
        for target, source in columns.items():
            if target not in fields[role]:
                raise ProblemError(422, f"mapping columns.{role}.{target}: not a field; "
                                        f"fields are {', '.join(fields[role])}")
            if source is not None and not isinstance(source, str):
                raise ProblemError(422, f"mapping columns.{role}.{target} must name a column (or be null)")


def section(mapping: dict[str, Any], name: str) -> dict[Any, Any]:
    value = mapping.get(name) or {}
    if not isinstance(value, dict):
        raise ProblemError(422, f"mapping {name} must be an object")
    return value
