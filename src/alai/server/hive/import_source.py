"""What the tables of a legacy hivemind.db mean.

The file is read by the Mission Control import's reader (`mc.import_source.read_tables`:
every table, every row, a stable key per row). Which table holds messages, memories
and agents, and which column is which field, is detected from names and synonyms; a
mapping (`--map mapping.yaml`, or `?map=` as JSON) overrides any of it:

    tables:           {messages: chat_log, agents: null}      # null: no such table
    columns:          {messages: {topic: room, content: body}}
    topics:           {"general chat": chat.general}           # legacy channel: topic
    memory_namespace: legacy                                   # one namespace for every memory

`kind_of` tells a hivemind.db from a mission-control.db, for `alai admin import`.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alai.server.mc import import_source as mc_source
from alai.server.problems import ProblemError
from alai.wire.hive import TOPIC_MAX, TOPIC_PATTERN

ROLES = ("messages", "memories", "agents")
TARGET_TABLES = {"messages": "hive_messages", "memories": "hive_memory", "agents": "hive_agents"}

# Target field -> source column names that mean it, best first (compared as the
# Mission Control import compares them: lower-case, without "_", "-" and spaces).
MESSAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id", "message_id", "msg_id", "uid", "uuid"),
    "topic": ("channel", "topic", "room", "channel_name", "subject", "queue", "stream"),
    "sender": ("sender", "from", "author", "agent", "user", "source", "sender_id"),
    "content": ("content", "body", "message", "text", "payload", "data", "msg"),
    "metadata": ("metadata", "meta", "headers", "extra", "attributes"),
    "key": ("key", "message_key", "routing_key"),
    "created_at": ("created_at", "timestamp", "ts", "created", "time", "sent_at", "date", "at"),
}
MEMORY_FIELDS: dict[str, tuple[str, ...]] = {
    "key": ("key", "name", "memory_key", "id"),
    "value": ("value", "content", "data", "memory", "text", "body"),
    "agent": ("agent", "owner", "agent_name", "namespace", "updated_by", "created_by"),
    "updated_at": ("updated_at", "updated", "modified", "modified_at", "timestamp", "ts", "created_at"),
}
AGENT_FIELDS: dict[str, tuple[str, ...]] = {
    "name": ("name", "agent", "agent_name", "id"),
    "status": ("status", "state"),
    "last_seen": ("last_seen", "last_seen_at", "last_active", "heartbeat", "last_heartbeat", "seen_at",
                  "updated_at"),
    "capabilities": ("capabilities", "skills", "tools", "abilities"),
}
FIELDS = {"messages": MESSAGE_FIELDS, "memories": MEMORY_FIELDS, "agents": AGENT_FIELDS}
TABLE_NAMES = {
    "messages": ("messages", "message", "hive_messages", "channel_messages", "posts"),
    "memories": ("memories", "memory", "hive_memory", "shared_memory", "agent_memory", "kv"),
    "agents": ("agents", "agent", "hive_agents", "agent_registry"),
}
# Without a known name, a table is taken for a role when it has these fields.
NEEDS = {"messages": ("topic", "content"), "memories": ("key", "value"), "agents": ("name", "capabilities")}
MAPPING_KEYS = {"tables", "columns", "topics", "memory_namespace"}
_TOPIC = re.compile(TOPIC_PATTERN)
MEMORY_KEY = re.compile(r"^[A-Za-z0-9_./:-]{1,200}$")  # what hive's memory routes accept
# A namespace is one segment of the route (/memory/{ns}/{key:path}): no "/".
MEMORY_NAMESPACE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


@dataclass
class Detected:
    """Which source table plays which role, and its column of each target field."""

    tables: dict[str, str | None]
    columns: dict[str, dict[str, str]]
    topics: dict[str, str] = field(default_factory=dict)
    memory_namespace: str | None = None


def kind_of(path: Path) -> str | None:
    """"hive" for a hivemind.db, "mc" for a mission-control.db, "both", or None (neither
    by its table names). Blocking; the file is opened read-only."""
    mc_source.check_sqlite(path)
    names: set[str] | None = None
    # As the reader does: read-only, then `immutable` for a WAL database in a folder we cannot write to.
    for options in ("mode=ro", "mode=ro&immutable=1"):
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?{options}", uri=True)
        except sqlite3.Error as error:
            raise ProblemError(422, f"{path.name} cannot be opened as SQLite: {error}") from None
        try:
            names = {mc_source.norm(row[0]) for row in db.execute("SELECT name FROM sqlite_master "
                                                                   "WHERE type = 'table'")}
            break
        except sqlite3.OperationalError:
            continue
        except sqlite3.DatabaseError as error:
            raise ProblemError(422, f"{path.name} is not a readable SQLite database: {error}") from None
        finally:
            db.close()
    if names is None:
        raise ProblemError(422, f"{path.name} is not a readable SQLite database")
    is_hive = any(mc_source.norm(name) in names for name in TABLE_NAMES["messages"] + TABLE_NAMES["memories"])
    is_mc = any(mc_source.norm(name) in names for name in mc_source.TABLE_NAMES["tasks"])
    return "both" if is_hive and is_mc else "hive" if is_hive else "mc" if is_mc else None


def detect(tables: list[mc_source.SourceTable], mapping: dict[str, Any] | None) -> Detected:
    """The roles and columns of the file, the mapping's choices first."""
    mapping = validate_mapping(mapping or {}, tables)
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
        columns[role] = mc_source.find_columns(FIELDS[role], by_name[name].columns, overrides)
        for target, source in columns[role].items():
            if source not in by_name[name].columns:
                raise ProblemError(422, f"mapping columns.{role}.{target}: table {name!r} has no column {source!r} "
                                        f"(it has {', '.join(by_name[name].columns)})")
    return Detected(tables=chosen, columns=columns,
                    topics={str(key): value for key, value in (mapping.get("topics") or {}).items()},
                    memory_namespace=mapping.get("memory_namespace"))


def _find_table(role: str, tables: list[mc_source.SourceTable]) -> str | None:
    by_norm = {mc_source.norm(table.name): table.name for table in tables}
    for candidate in TABLE_NAMES[role]:
        if mc_source.norm(candidate) in by_norm:
            return by_norm[mc_source.norm(candidate)]
    for table in tables:
        found = mc_source.find_columns(FIELDS[role], table.columns, {})
        if all(need in found for need in NEEDS[role]):
            return table.name
    return None


def validate_mapping(mapping: Any, tables: list[mc_source.SourceTable]) -> dict[str, Any]:
    """The mapping, checked against the file; a mistake is a 422 before any write."""
    if not isinstance(mapping, dict):
        raise ProblemError(422, "the mapping must be a YAML/JSON object with tables, columns, topics, "
                                "memory_namespace")
    unknown = set(mapping) - MAPPING_KEYS
    if unknown:
        raise ProblemError(422, f"unknown mapping key(s) for a hivemind.db: {', '.join(sorted(map(str, unknown)))}; "
                                f"allowed: {', '.join(sorted(MAPPING_KEYS))}")
    mc_source.check_tables_and_columns(mapping, tables, ROLES, FIELDS)
    for channel, topic in mc_source.section(mapping, "topics").items():
        if not isinstance(topic, str) or len(topic) > TOPIC_MAX or not _TOPIC.match(topic):
            raise ProblemError(422, f"mapping topics.{channel}: {topic!r} is not a topic name (dotted segments of "
                                    "letters, digits, _ and -, e.g. chat.general)")
    namespace = mapping.get("memory_namespace")
    if namespace is not None and (not isinstance(namespace, str) or not MEMORY_NAMESPACE.match(namespace)):
        raise ProblemError(422, f"mapping memory_namespace: {namespace!r} must be 1-200 letters, digits, _ - . :")
    return mapping
