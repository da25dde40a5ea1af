"""Turning the rows of a legacy hivemind.db into hive_messages, hive_memory and hive_agents rows.

No database here: `transform` converts every row and records its problems; the
importer then decides, with what the database holds, what is written. Every source
row ends up in `Plan.rows_of_table` (kept verbatim) whatever happens to it.

Mapping, in short (docs/guide/hive.md, "Import of hivemind.db"):
- a message's channel becomes its topic; a channel that is not a topic name is
  mapped deterministically (`/` and `\\` become `.`, accents are dropped, any other
  character outside letters, digits, `_`, `-` becomes `_`, empty segments go, a name
  taken by another channel gets `-2`, `-3` …) and the map is reported;
- content that is JSON becomes a `json` payload, anything else a `text` payload;
  metadata (a JSON object) becomes the headers, values that are not strings as their
  JSON text; columns the importer does not know become headers too;
- messages are written in legacy order (by legacy id when the ids are whole numbers,
  else in the order of the file), so new ids and stream positions follow it;
- a memory goes to namespace = its agent ("legacy" without one), key = its key;
  a value that is JSON text is stored parsed, anything else as a JSON string.
"""

from __future__ import annotations

import base64
import hashlib
import math
import operator
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson

from alai.server.hive.import_source import MEMORY_KEY, MEMORY_NAMESPACE, TARGET_TABLES, Detected
from alai.server.mc import import_source as mc_source
from alai.server.mc import import_values as values
from alai.wire.hive import PAYLOAD_MAX_BYTES, TOPIC_MAX, TOPIC_PATTERN

MESSAGE_COLUMNS = ("topic", "sender", "key", "headers", "content_type", "payload", "created_at")
NO_CHANNEL = "(none)"  # the topic map's entry for messages without a channel
NO_CHANNEL_TOPIC = "legacy.no-channel"
DEFAULT_NAMESPACE = "legacy"
KEY_MAX = 200
_TOPIC = re.compile(TOPIC_PATTERN)
_SLASHES = re.compile(r"[\\/]+")
_NOT_TOPIC = re.compile(r"[^A-Za-z0-9_.-]+")
_NOT_MEMORY_KEY = re.compile(r"[^A-Za-z0-9_./:-]+")
_NOT_NAMESPACE = re.compile(r"[^A-Za-z0-9_.:-]+")
JSON_START = ("{", "[")


@dataclass(slots=True)
class SourceRow:
    """One source row as hive_import_rows keeps it."""

    table: str
    key: str
    data: str = ""
    row_hash: str = ""
    problems: list[str] = field(default_factory=list)
    target_id: str | None = None
    seen_before: bool = False  # imported already, from another file


@dataclass(slots=True)
class MessageRow:
    topic: str
    sender: str
    key: str | None
    headers: str  # JSON text
    content_type: str
    payload: str  # JSON text
    created_at: datetime
    source: SourceRow
    write: bool = True
    id: int | None = None


@dataclass(slots=True)
class MemoryRow:
    namespace: str
    key: str
    value: str  # JSON text
    updated_at: datetime
    updated_by: str
    source: SourceRow
    write: bool = True


@dataclass(slots=True)
class AgentRow:
    name: str
    status: str | None
    last_seen: datetime | None
    capabilities: str  # JSON text
    metadata: str  # JSON text
    source: SourceRow
    write: bool = True


@dataclass
class Plan:
    detected: Detected
    tables: list[mc_source.SourceTable]
    rows_of_table: dict[str, list[SourceRow]] = field(default_factory=dict)
    messages: list[MessageRow] = field(default_factory=list)
    memories: list[MemoryRow] = field(default_factory=list)
    agents: list[AgentRow] = field(default_factory=list)
    topic_map: dict[str, str] = field(default_factory=dict)
    namespace_map: dict[str, str] = field(default_factory=dict)
    column_map: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def source_rows(self) -> Iterable[SourceRow]:
        for rows in self.rows_of_table.values():
            yield from rows

    def written(self, role: str) -> int:
        return sum(1 for item in getattr(self, role) if item.write)


def transform(tables: list[mc_source.SourceTable], detected: Detected, *, now: datetime | None = None) -> Plan:
    """Converts every row of the file (blocking: run it in a thread); `encode_source_rows`
    makes the verbatim copies."""
    now = now or datetime.now(UTC)
    plan = Plan(detected=detected, tables=tables)
    roles = {name: role for role, name in detected.tables.items() if name}
    for table in tables:
        plan.rows_of_table[table.name] = [SourceRow(table.name, key) for key in table.keys]
        if table.error:
            plan.notes.append(f"table {table.name!r} could not be read completely ({table.error}); "
                              f"{len(table.rows)} row(s) kept")
        role = roles.get(table.name)
        if role is None:
            plan.column_map[table.name] = "hive_import_rows"
            if table.rows:
                plan.notes.append(f"table {table.name!r} is not HiveMind data; its {len(table.rows)} row(s) are kept "
                                  "verbatim in hive_import_rows")
            continue
        plan.column_map[table.name] = TARGET_TABLES[role]
        _map_columns(plan, table, role)
    by_name = {table.name: table for table in tables}
    if detected.tables["messages"]:
        _Messages(plan, by_name[detected.tables["messages"]], now).convert()
    elif tables:
        plan.notes.append("no table of messages found; name it with a mapping (tables: {messages: NAME})")
    if detected.tables["memories"]:
        _memories(plan, by_name[detected.tables["memories"]], now)
    if detected.tables["agents"]:
        _agents(plan, by_name[detected.tables["agents"]])
    if not tables:
        plan.notes.append("the file has no tables")
    return plan


def encode_source_rows(plan: Plan) -> None:
    """Each source row as JSON, and its row_hash (blocking: run it in a thread; it can
    run while the messages are being written)."""
    for table in plan.tables:
        careful, prefix = table.has_bad_text, f"{table.name}\x00".encode()
        for out, row in zip(plan.rows_of_table[table.name], table.rows, strict=True):
            out.data = data = values.verbatim_json(table.columns, row, careful=careful)
            out.row_hash = hashlib.blake2b(prefix + out.key.encode("utf-8", "surrogatepass") + b"\x00" + data.encode(),
                                           digest_size=16).hexdigest()


def _map_columns(plan: Plan, table: mc_source.SourceTable, role: str) -> None:
    mapped = plan.detected.columns[role]
    target = TARGET_TABLES[role]
    where = {"messages": "hive_messages.headers", "memories": "hive_import_rows", "agents": "hive_agents.metadata"}
    field_of = {"messages": {"topic": "topic", "id": "id (legacy order)", "content": "payload", "metadata": "headers"},
                "memories": {"agent": "namespace"}, "agents": {}}[role]
    for name, column in mapped.items():
        plan.column_map[f"{table.name}.{column}"] = f"{target}.{field_of.get(name, name)}"
    rest = [column for column in table.columns if column not in mapped.values()]
    for column in rest:
        plan.column_map[f"{table.name}.{column}"] = (f"{where[role]}.{column}" if role != "memories"
                                                     else where[role])
    if rest:
        plan.notes.append(f"table {table.name!r}: column(s) {', '.join(rest)} have no field of their own; "
                          f"kept in {where[role]}")


def _reader(table: mc_source.SourceTable, columns: dict[str, str]) -> Callable[[tuple, str], Any]:
    position = {target: table.columns.index(column) for target, column in columns.items()}
    return lambda row, target: row[position[target]] if target in position else None


# -- names -----------------------------------------------------------------------------


def _suffixed(base: str, taken: set[str], limit: int) -> str:
    candidate, number = base, 2
    while candidate in taken:
        suffix = f"-{number}"
        candidate = base[:limit - len(suffix)] + suffix
        number += 1
    return candidate


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()


def _ascii(text: str) -> str:
    return "".join(char for char in unicodedata.normalize("NFKD", text) if not unicodedata.combining(char))


def topic_for(channel: str) -> str:
    """A topic name for a channel that is not one (see the module docstring)."""
    text = _NOT_TOPIC.sub("_", _SLASHES.sub(".", _ascii(channel.strip())))
    name = ".".join(segment for segment in text.split(".") if segment) or "legacy.unnamed"
    if len(name) > TOPIC_MAX:
        name = name[:TOPIC_MAX - 9].rstrip(".") + "-" + _short_hash(channel)
    return name


def memory_key_for(value: str, *, namespace: bool = False) -> str:
    """A key (or, without "/", a namespace) the memory routes accept, for one they would not."""
    name = (_NOT_NAMESPACE if namespace else _NOT_MEMORY_KEY).sub("_", _ascii(value.strip())) or "_"
    if len(name) > KEY_MAX:
        name = name[:KEY_MAX - 9] + "-" + _short_hash(value)
    return name


def map_names(names: Iterable[str], *, valid: Callable[[str], bool], rename: Callable[[str], str],
              overrides: dict[str, str], limit: int) -> dict[str, str]:
    """Every name to a valid one, deterministically: overrides first, then valid names keep
    theirs, then the others (in sorted order) get a renamed one not yet taken."""
    result: dict[str, str] = {}
    pending = sorted(set(names))
    for name in pending:
        if name in overrides:
            result[name] = overrides[name]
        elif valid(name):
            result[name] = name
    taken = set(result.values())
    for name in pending:
        if name not in result:
            result[name] = _suffixed(rename(name), taken, limit)
            taken.add(result[name])
    return result


def _is_topic(name: str) -> bool:
    return len(name) <= TOPIC_MAX and bool(_TOPIC.match(name))


def _is_memory_key(name: str) -> bool:
    return bool(MEMORY_KEY.match(name))


def _is_namespace(name: str) -> bool:
    return bool(MEMORY_NAMESPACE.match(name))


# -- values ----------------------------------------------------------------------------------


def _json_text(value: Any) -> str | None:
    """JSON text jsonb takes, or None (NaN, infinities)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        return values.to_json(value)
    except (TypeError, ValueError):
        return None


def parse(text: str) -> tuple[Any, str | None]:
    """(value, JSON text jsonb takes) of JSON text; (None, None) when it is not JSON.

    The fast path (orjson) hands the text itself to jsonb: valid JSON without the
    escapes jsonb refuses (NUL, lone surrogates) is valid jsonb. Text with those escapes
    or with long numbers (which orjson reads as floats, losing digits) goes the Mission
    Control import's careful way."""
    if not values.LONG_NUMBER.search(text) and ("\\u" not in text or not values.JSONB_UNSAFE_ESCAPE.search(text)):
        try:
            return orjson.loads(text), text
        except orjson.JSONDecodeError:
            return None, None
    try:
        value, ok = values.parse_json(text)
    except RecursionError:
        return None, None
    encoded = _json_text(value) if ok else None
    return (value, encoded) if encoded is not None else (None, None)


def _blob(value: bytes) -> str:
    return values.to_json({"$blob_base64": base64.b64encode(value).decode("ascii")})


def json_or_text(raw: Any, what: str, problems: list[str]) -> tuple[str, str]:
    """("json" | "text", JSON text): text that is JSON is taken as JSON, anything else as text."""
    if raw.__class__ is str:
        _, encoded = parse(raw)
        if encoded is not None:
            return "json", encoded
        stripped = raw.lstrip()
        if stripped[:1] in JSON_START:
            problems.append(f"{what} looks like JSON but is not valid; imported as text")
        if "\x00" not in raw:
            return "text", values.to_json(raw)
    if raw is None:
        problems.append(f"no {what}; imported as JSON null")
        return "json", "null"
    if isinstance(raw, bytes):
        problems.append(f"{what} is binary; imported as JSON {{\"$blob_base64\": …}}")
        return "json", _blob(raw)
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        encoded = _json_text(raw)
        if encoded is not None:
            return "json", encoded
        problems.append(f"{what} {raw!r} is not a JSON number; imported as text")
        return "text", values.to_json(repr(raw))
    text, problem = values.clean_text(raw)  # BadText, NUL characters
    if problem:
        problems.append(f"{what}: {problem}")
    return "text", values.to_json(text)


def _header_value(value: Any) -> str:
    return value if isinstance(value, str) else values.to_json(value)


def headers_of(raw: Any, column: str, problems: list[str]) -> dict[str, str]:
    """Legacy metadata as headers (string values); what is not a JSON object goes to headers[column]."""
    if raw is None:
        return {}
    if raw.__class__ is str:
        if not raw.strip():
            return {}
        parsed, encoded = parse(raw)
        if isinstance(parsed, dict):
            return {key: _header_value(value) for key, value in parsed.items()}
        if encoded is not None:
            problems.append(f"{column} is not a JSON object; kept in headers.{column}")
            return {column: encoded}
        problems.append(f"{column} is not valid JSON; kept as text in headers.{column}")
        return {column: values.clean_text(raw)[0] or ""}
    problems.append(f"{column} is not JSON text; kept in headers.{column}")
    return {column: values.clean_text(raw)[0] if isinstance(raw, str) else _header_value(values.jsonable(raw))}


def _text(raw: Any, what: str, problems: list[str]) -> str | None:
    text, problem = values.clean_text(raw)
    if problem:
        problems.append(f"{what}: {problem}")
    return text


def _too_big(encoded: str) -> bool:
    return len(encoded) * 4 > PAYLOAD_MAX_BYTES and len(encoded.encode()) > PAYLOAD_MAX_BYTES


# -- messages --------------------------------------------------------------------------------


def _legacy_order(table: mc_source.SourceTable, id_column: str | None) -> tuple[list[int], str]:
    """The rows' indexes in legacy order, and how it was decided (for the report)."""
    indexes = list(range(len(table.rows)))
    if id_column is not None:
        position = table.columns.index(id_column)
        ids = [row[position] for row in table.rows]
        if all(value.__class__ is int for value in ids):
            indexes.sort(key=ids.__getitem__)  # stable: equal ids stay in file order
            return indexes, f"by legacy {id_column}"
    return indexes, "in file order"


def _picker(table: mc_source.SourceTable, columns: dict[str, str], target: str) -> Callable[[tuple], Any]:
    if target not in columns:
        return lambda row: None
    return operator.itemgetter(table.columns.index(columns[target]))


def _channel_text(channel: Any) -> str | None:
    if channel is None:
        return None
    text = channel if channel.__class__ is str else str(channel)
    return text if text.strip() else None


class _Messages:
    """Converts the messages of the file, in legacy order, into `plan.messages`."""

    def __init__(self, plan: Plan, table: mc_source.SourceTable, now: datetime) -> None:
        self.plan, self.table = plan, table
        columns = plan.detected.columns["messages"]
        self.channel_of, self.sender_of, self.content_of, self.metadata_of, self.key_of, self.time_of = (
            _picker(table, columns, target) for target in ("topic", "sender", "content", "metadata", "key",
                                                           "created_at"))
        self.extra = [(name, index) for index, name in enumerate(table.columns) if name not in columns.values()]
        self.metadata_column = columns.get("metadata", "metadata")
        self.has_metadata, self.has_key = "metadata" in columns, "key" in columns
        self.outs = plan.rows_of_table[table.name]
        self.channels = [_channel_text(self.channel_of(row)) for row in table.rows]
        plan.topic_map = map_names(filter(None, self.channels), valid=_is_topic, rename=topic_for,
                                   overrides=plan.detected.topics, limit=TOPIC_MAX)
        if None in self.channels:
            plan.topic_map[NO_CHANNEL] = plan.topic_map.get(NO_CHANNEL, NO_CHANNEL_TOPIC)
        for channel, topic in plan.topic_map.items():
            if channel not in (topic, NO_CHANNEL) and channel not in plan.detected.topics:
                plan.notes.append(f"channel {channel!r} is not a topic name; its messages went to topic {topic!r}")
        self.order, how = _legacy_order(table, columns.get("id"))
        if not how.startswith("by "):
            plan.notes.append(f"table {table.name!r} has no whole-number id column; messages were taken {how}")
        # What a message without a usable time takes: the one before it's, at the start the first one's.
        self.previous_time = self._first_time() or now
        self.previous_is_now = self.previous_time is now

    def _first_time(self) -> datetime | None:
        for index in self.order:
            moment, _ = values.parse_timestamp(self.time_of(self.table.rows[index]))
            if moment is not None:
                return moment
        return None

    def convert(self) -> None:
        rows, outs, channels, topic_map = self.table.rows, self.outs, self.channels, self.plan.topic_map
        append = self.plan.messages.append
        for index in self.order:
            row, out = rows[index], outs[index]
            problems = out.problems
            channel = channels[index]
            if channel is None:
                topic = topic_map[NO_CHANNEL]
                problems.append(f"no channel; imported into topic {topic!r}")
            else:
                topic = topic_map[channel]
                if isinstance(channel, values.BadText):
                    problems.append("channel is not valid UTF-8; undecodable bytes replaced")
            sender = self.sender_of(row)
            if sender.__class__ is not str or "\x00" in sender:
                sender = _text(sender, "sender", problems)
            sender = sender.strip() if sender else ""
            if not sender:
                sender = values.FALLBACK_ACTOR
                problems.append(f"no sender; imported as {sender!r}")
            content_type, payload = json_or_text(self.content_of(row), "content", problems)
            if len(payload) * 4 > PAYLOAD_MAX_BYTES and _too_big(payload):
                problems.append(f"content is larger than the {PAYLOAD_MAX_BYTES // 1024} KiB a publish may hold; "
                                "imported whole")
            headers = headers_of(self.metadata_of(row), self.metadata_column, problems) if self.has_metadata else {}
            for name, position in self.extra:
                value = row[position]
                if value is not None:
                    header = name if name not in headers else f"legacy_{name}"
                    headers[header] = (values.clean_text(value)[0] if isinstance(value, str)
                                       else _header_value(values.jsonable(value)))
            key = _text(self.key_of(row), "key", problems) if self.has_key else None
            if key is not None and len(key) > KEY_MAX:
                key = key[:KEY_MAX]
                problems.append(f"key longer than {KEY_MAX} characters; cut")
            append(MessageRow(topic, sender, key or None, values.to_json(headers) if headers else "{}", content_type,
                              payload, self._time(row, problems), out))

    def _time(self, row: tuple, problems: list[str]) -> datetime:
        created, problem = values.parse_timestamp(self.time_of(row))
        if created is not None:
            self.previous_time, self.previous_is_now = created, False
            return created
        problems.append(f"created_at: {problem}" if problem else "no created_at")
        problems.append("imported with the time of the import" if self.previous_is_now
                        else "imported with the time of the message before it (or of the first one)")
        return self.previous_time


# -- memories ------------------------------------------------------------------------------------


def _memories(plan: Plan, table: mc_source.SourceTable, now: datetime) -> None:
    columns = plan.detected.columns["memories"]
    get = _reader(table, columns)
    outs = plan.rows_of_table[table.name]
    fixed = plan.detected.memory_namespace
    agents = [(values.clean_text(get(row, "agent"))[0] or "").strip() for row in table.rows]
    plan.namespace_map = {} if fixed else map_names(filter(None, agents), valid=_is_namespace,
                                                    rename=partial(memory_key_for, namespace=True), overrides={},
                                                    limit=KEY_MAX)
    for agent, namespace in plan.namespace_map.items():
        if agent != namespace:
            plan.notes.append(f"agent {agent!r} is not a memory namespace; its memories went to {namespace!r}")
    if fixed:
        plan.notes.append(f"every memory went to namespace {fixed!r} (memory_namespace)")
    namespaces = [fixed or (plan.namespace_map[agent] if agent else DEFAULT_NAMESPACE) for agent in agents]
    raw_keys = [values.clean_text(get(row, "key"))[0] for row in table.rows]
    # Keys that are fine keep their name (the first row that has it), whatever comes before them.
    owner: dict[tuple[str, str], int] = {}
    for index, (namespace, raw_key) in enumerate(zip(namespaces, raw_keys, strict=True)):
        if raw_key is not None and _is_memory_key(raw_key):
            owner.setdefault((namespace, raw_key), index)
    taken: dict[str, set[str]] = {}
    for namespace, raw_key in owner:
        taken.setdefault(namespace, set()).add(raw_key)
    for index, (row, out, agent) in enumerate(zip(table.rows, outs, agents, strict=True)):
        problems, namespace = out.problems, namespaces[index]
        raw_key = _text(get(row, "key"), "key", problems)
        in_namespace = taken.setdefault(namespace, set())
        if raw_key is None or not raw_key.strip():
            unique = _suffixed(f"row-{memory_key_for(out.key)}", in_namespace, KEY_MAX)
            problems.append(f"no key; imported as {unique!r}")
        elif owner.get((namespace, raw_key)) == index:
            unique = raw_key
        else:
            unique = _suffixed(memory_key_for(raw_key), in_namespace, KEY_MAX)
        in_namespace.add(unique)
        if raw_key is not None and raw_key.strip() and unique != raw_key:
            problems.append(f"key {raw_key!r} is not a memory key (1-200 letters, digits, _ - . / :) or is taken; "
                            f"imported as {unique!r}")
        _, value = json_or_text(get(row, "value"), "value", problems)
        if _too_big(value):
            problems.append(f"value is larger than the {PAYLOAD_MAX_BYTES // 1024} KiB a memory may hold; "
                            "imported whole")
        updated, problem = values.parse_timestamp(get(row, "updated_at"))
        if updated is None:
            updated = now
            problems.append(f"updated_at: {problem}; imported as the import time" if problem
                            else "no updated_at; imported as the import time")
        out.target_id = f"{namespace}/{unique}"
        plan.memories.append(MemoryRow(namespace, unique, value, updated, agent or values.FALLBACK_ACTOR, out))


# -- agents --------------------------------------------------------------------------------------


def _capabilities(raw: Any, problems: list[str]) -> str:
    if raw is None:
        return "[]"
    if isinstance(raw, str) and not isinstance(raw, values.BadText):
        if not raw.strip():
            return "[]"
        parsed, ok = values.parse_json(raw)
        encoded = _json_text(parsed) if ok else None
        if encoded is not None:
            return encoded
        items = [item.strip() for item in raw.strip().strip("[]").replace('"', "").split(",")]
        problems.append("capabilities are not valid JSON; split at commas")
        return values.to_json([item for item in items if item])
    problems.append("capabilities are not JSON text; kept as they are")
    return values.to_json([values.jsonable(raw)])


def _agents(plan: Plan, table: mc_source.SourceTable) -> None:
    columns = plan.detected.columns["agents"]
    get = _reader(table, columns)
    extra = [(name, index) for index, name in enumerate(table.columns) if name not in columns.values()]
    seen: set[str] = set()
    for row, out in zip(table.rows, plan.rows_of_table[table.name], strict=True):
        problems = out.problems
        name = (_text(get(row, "name"), "name", problems) or "").strip()
        if not name:
            name = f"unnamed-{out.key}"
            problems.append(f"no name; imported as {name!r}")
        if name in seen:
            original, name = name, _suffixed(name, seen, 1000)
            problems.append(f"name {original!r} appears more than once; imported as {name!r}")
        seen.add(name)
        out.target_id = name
        metadata: dict[str, Any] = {}
        last_seen, problem = values.parse_timestamp(get(row, "last_seen"))
        if problem:
            problems.append(f"last_seen: {problem}; original kept in metadata")
            metadata[columns["last_seen"]] = values.jsonable(get(row, "last_seen"))
        for column, index in extra:
            if row[index] is not None:
                metadata[column if column not in metadata else f"legacy_{column}"] = values.jsonable(row[index])
        status = _text(get(row, "status"), "status", problems)
        plan.agents.append(AgentRow(name, status, last_seen, _capabilities(get(row, "capabilities"), problems),
                                    values.to_json(metadata), out))
