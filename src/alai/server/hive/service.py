"""HiveMind topics, messages and shared memory (SQL lives here).

Subscribers receive messages in position order (transaction id, then message id).
For that to be each topic's commit order, whatever writes a topic's messages takes
the topic's advisory lock (lock_topics, migration 0004) before its transaction's
first write — a transaction gets its id at that write, so the next writer of the
topic gets a larger one only after this one has committed (a transaction that had
written already and then queued for the topic could otherwise hold an older id than
one that commits before it). hive_publish takes it itself; a transaction that writes
anything else first (an idempotency record, a memory value, an import) calls
lock_topics at its start.
Functions take `conn` keyword-only and never commit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from psycopg import AsyncConnection

from alai.server import streams
from alai.server.problems import ProblemError
from alai.wire.hive import (
    PAYLOAD_MAX_BYTES,
    TOPIC_MAX,
    TOPIC_PATTERN,
    MemoryEntry,
    Message,
    MessageIn,
    MessagePage,
    Published,
    Topic,
    TopicSettings,
)

NOTIFY_CHANNEL = "alai_hive"
MESSAGE_COLUMNS = "id, tx::text AS tx, topic, sender, key, headers, content_type, payload, created_at"
TOPIC_COLUMNS = ("name, description, extract(epoch FROM retention_max_age)::bigint AS retention_max_age_seconds, "
                 "retention_max_count, message_count, last_message_at, created_at, created_by")
_TOPIC = re.compile(TOPIC_PATTERN)
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
MEMORY_TOPIC_PREFIX = "hive.memory."


def check_topic(name: str) -> str:
    if len(name) > TOPIC_MAX or not _TOPIC.match(name):
        raise ProblemError(422, f"{name!r} is not a topic name: dotted segments of letters, digits, _ and - "
                                "(agents.status)", slug="bad-topic")
    return name


def check_publishable(name: str) -> str:
    """A topic a client may publish on: `hive.memory.*` carries the memory's own change
    events, which a publish must not be able to fake."""
    check_topic(name)
    if name.startswith(MEMORY_TOPIC_PREFIX):
        raise ProblemError(403, f"{name!r} carries the shared memory's change events; only a change to the "
                                "memory publishes there", slug="reserved-topic")
    return name


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """`agents.*` (one segment), `tenders.>` (one or more trailing segments), or a topic."""
    segments = pattern.split(".") if pattern else []
    if not segments or len(pattern) > TOPIC_MAX:
        raise ProblemError(422, "a subscription needs a topic or a pattern such as agents.* or tenders.>",
                           slug="bad-pattern")
    parts = []
    for index, segment in enumerate(segments):
        if segment == "*":
            parts.append(r"[A-Za-z0-9_-]+")
        elif segment == ">" and index == len(segments) - 1:
            parts.append(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
        elif _SEGMENT.match(segment):
            parts.append(re.escape(segment))
        else:
            raise ProblemError(422, f"{pattern!r} is not a pattern: segments are names, `*` (one segment) or a "
                                    "final `>` (the rest)", slug="bad-pattern")
    return re.compile("^" + r"\.".join(parts) + "$")


def _message(row: dict[str, Any]) -> Message:
    return Message(position=f"{row['tx']}-{row['id']}", **{k: v for k, v in row.items() if k != "tx"})


def position_of(message: Message) -> streams.Position:
    return streams.parse_position_text(message.position)


@dataclass(frozen=True)
class Prepared:
    """A message checked and encoded, ready for the INSERT: the payload and headers as
    JSON text (made once, with orjson)."""

    content_type: str
    payload: str
    key: str | None
    headers: str


def _json_text(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits; anything else fails the same way below
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    if "null" in text:  # orjson writes NaN and infinities as null; jsonb has neither
        try:
            json.dumps(value, allow_nan=False)
        except ValueError:
            raise ProblemError(422, "NaN and Infinity are not JSON; send null or a string",
                               slug="bad-payload") from None
    return text


def prepare(message: MessageIn) -> Prepared:
    """Checks a message (413 past the size limit) and encodes it."""
    content_type, payload = ("json", message.json_) if "json_" in message.model_fields_set else ("text", message.text)
    text = _json_text(payload)
    size = len(text.encode())
    if size > PAYLOAD_MAX_BYTES:
        raise ProblemError(413, f"a message may hold at most {PAYLOAD_MAX_BYTES // 1024} KiB; this one has "
                                f"{size // 1024} KiB", slug="payload-too-large")
    return Prepared(content_type, text, message.key, _json_text(message.headers))


@dataclass
class Group:
    """Messages of one publish request: one topic, one sender, in order."""

    topic: str
    sender: str
    messages: list[Prepared]


async def lock_topics(conn: AsyncConnection, topics: list[str]) -> None:
    """Takes the topics' locks (until the transaction ends): call before the
    transaction's first write when it will publish on them (see the module docstring)."""
    await conn.execute("SELECT hive_lock_topics(%b::text[])", (list(topics),))


async def publish(conn: AsyncConnection, *, topic: str, messages: list[MessageIn], sender: str) -> Published:
    check_topic(topic)
    return (await publish_groups(conn, [Group(topic, sender, [prepare(message) for message in messages])]))[0]


async def publish_groups(conn: AsyncConnection, groups: list[Group]) -> list[Published]:
    """Stores the groups' messages, each group's contiguous and in order, in one
    statement (hive_publish, migration 0003; it locks the topics' rows first, in name
    order: see the module docstring). In autocommit mode that statement is the
    transaction (the group commit of hive/publisher.py)."""
    flat = [(group.topic, group.sender, message) for group in groups for message in group.messages]
    # %b: arrays in binary. In text, psycopg quotes and escapes every element in Python
    # (~14 µs for a small JSON payload against ~0.2 µs), which a busy publisher pays per message.
    cursor = await conn.execute(
        "SELECT out_id AS id, out_tx AS tx FROM hive_publish(%b, %b, %b, %b, %b, %b)",
        ([f[0] for f in flat], [f[1] for f in flat], [f[2].content_type for f in flat], [f[2].payload for f in flat],
         [f[2].key for f in flat], [f[2].headers for f in flat]),
    )
    # Identity values follow the ORDER BY: sorted ids map back onto the input order.
    stored = sorted(await cursor.fetchall(), key=lambda row: row["id"])
    results, start = [], 0
    for group in groups:
        mine = stored[start:start + len(group.messages)]
        start += len(group.messages)
        results.append(Published(topic=group.topic, ids=[row["id"] for row in mine],
                                 positions=[f"{row['tx']}-{row['id']}" for row in mine]))
    return results


async def visible_messages(conn: AsyncConnection, *, after: streams.Position, limit: int) -> list[Message]:
    rows = await streams.final_rows(conn, table="hive_messages", columns=MESSAGE_COLUMNS, after=after, limit=limit)
    return [_message(row) for row in rows]


async def current_position(conn: AsyncConnection) -> streams.Position:
    return await streams.current_position_of(conn, "hive_messages")


async def position_of_id(conn: AsyncConnection, *, message_id: int) -> streams.Position:
    if message_id <= 0:
        return streams.START
    row = await (await conn.execute("SELECT tx::text AS tx FROM hive_messages WHERE id = %s",
                                    (message_id,))).fetchone()
    if row is None:
        raise ProblemError(400, f"there is no message {message_id} (pruned, or never existed); "
                                "resume from a position the stream sent, or from now", slug="bad-resume-id")
    return int(row["tx"]), message_id


async def check_position(conn: AsyncConnection, position: streams.Position) -> streams.Position:
    """A position no stream has sent yet (a later transaction or id than any so far: a
    typo, or another database's) is refused; resuming from it would skip messages."""
    row = await (await conn.execute(
        "SELECT %s::xid8 < pg_snapshot_xmax(pg_current_snapshot()) AND %s <= coalesce(pg_sequence_last_value("
        "pg_get_serial_sequence('hive_messages', 'id')), 0) AS known", (str(position[0]), position[1]))).fetchone()
    if not row["known"]:
        raise ProblemError(400, f"position {position[0]}-{position[1]} is past every message so far; resume from "
                                "a position the stream sent, or from now", slug="bad-resume-id")
    return position


async def history(conn: AsyncConnection, *, topic: str, after_id: int | None, since: datetime | None, limit: int,
                  newest_first: bool) -> MessagePage:
    check_topic(topic)
    clauses, params = ["topic = %s"], [topic]
    if after_id is not None:
        clauses.append("id < %s" if newest_first else "id > %s")
        params.append(after_id)
    if since is not None:
        clauses.append("created_at >= %s")
        params.append(since)
    order = "DESC" if newest_first else "ASC"
    rows = await (await conn.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM hive_messages WHERE {' AND '.join(clauses)} ORDER BY id {order} LIMIT %s",
        [*params, limit + 1])).fetchall()
    items = [_message(row) for row in rows[:limit]]
    return MessagePage(items=items, next_after_id=items[-1].id if len(rows) > limit else None)


# -- topics ---------------------------------------------------------------------------


async def list_topics(conn: AsyncConnection) -> list[Topic]:
    rows = await (await conn.execute(f"SELECT {TOPIC_COLUMNS} FROM hive_topics ORDER BY name")).fetchall()
    return [Topic(**row) for row in rows]


async def get_topic(conn: AsyncConnection, *, name: str) -> Topic:
    check_topic(name)
    row = await (await conn.execute(f"SELECT {TOPIC_COLUMNS} FROM hive_topics WHERE name = %s", (name,))).fetchone()
    if row is None:
        raise ProblemError(404, f"no topic {name}", slug="topic-not-found")
    return Topic(**row)


async def put_topic(conn: AsyncConnection, *, name: str, settings: TopicSettings, actor: str) -> Topic:
    check_topic(name)
    age = timedelta(seconds=settings.retention_max_age_seconds) if settings.retention_max_age_seconds else None
    await conn.execute(
        """
        INSERT INTO hive_topics (name, description, retention_max_age, retention_max_count, created_by)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description,
            retention_max_age = EXCLUDED.retention_max_age, retention_max_count = EXCLUDED.retention_max_count
        """, (name, settings.description, age, settings.retention_max_count, actor))
    return await get_topic(conn, name=name)


async def prune(conn: AsyncConnection, *, batch: int = 5000) -> int:
    """Deletes one batch of messages past their topic's retention; returns how many.
    Small batches in short transactions: no long locks."""
    deleted = await (await conn.execute(
        """
        WITH expired AS (
            SELECT m.id, m.topic FROM hive_messages m JOIN hive_topics t ON t.name = m.topic
            WHERE t.retention_max_age IS NOT NULL AND m.created_at < now() - t.retention_max_age
            UNION
            SELECT m.id, m.topic FROM hive_topics t
            CROSS JOIN LATERAL (
                SELECT id, topic FROM hive_messages WHERE topic = t.name ORDER BY id DESC
                OFFSET t.retention_max_count LIMIT %s) m
            WHERE t.retention_max_count IS NOT NULL
            LIMIT %s
        ), gone AS (
            DELETE FROM hive_messages WHERE id IN (SELECT id FROM expired) RETURNING topic
        ), counted AS (
            SELECT topic, count(*) AS n FROM gone GROUP BY topic
        )
        UPDATE hive_topics t SET message_count = greatest(0, t.message_count - c.n)
        FROM counted c WHERE t.name = c.topic
        RETURNING c.n
        """, (batch, batch))).fetchall()
    return sum(row["n"] for row in deleted)


# -- shared memory ------------------------------------------------------------------------


def _check_memory_name(value: str, what: str) -> str:
    if not value or len(value) > 200 or not _SEGMENT.match(value.replace(".", "_").replace("/", "_")
                                                          .replace(":", "_")):
        raise ProblemError(422, f"{what} {value!r} must be 1-200 letters, digits, _ - . / :", slug="bad-name")
    return value


async def memory_get(conn: AsyncConnection, *, namespace: str, key: str, for_update: bool = False) -> MemoryEntry:
    row = await (await conn.execute(
        f"SELECT * FROM hive_memory WHERE namespace = %s AND key = %s{' FOR UPDATE' if for_update else ''}",
        (namespace, key))).fetchone()
    if row is None:
        raise ProblemError(404, f"no memory {namespace}/{key}", slug="memory-not-found")
    return MemoryEntry(**row)


async def memory_list(conn: AsyncConnection, *, namespace: str, prefix: str, limit: int,
                      after: str | None = None) -> list[MemoryEntry]:
    """Keys in key order; `after` (the last key of the previous page) pages on."""
    rows = await (await conn.execute(
        "SELECT * FROM hive_memory WHERE namespace = %s AND starts_with(key, %s) AND (%s::text IS NULL OR key > %s) "
        "ORDER BY key LIMIT %s",
        (namespace, prefix, after, after, limit))).fetchall()
    return [MemoryEntry(**row) for row in rows]


async def memory_put(conn: AsyncConnection, *, namespace: str, key: str, value: Any, actor: str,
                     if_match: int | None, if_none_match: bool) -> tuple[MemoryEntry, bool]:
    """Sets a value (412 on a stale If-Match, or If-None-Match on an existing key);
    returns (entry, created). Publishes the change. Call in a transaction."""
    _check_memory_name(namespace, "namespace")
    if "/" in namespace:  # /memory/{ns}/{key:path} could never address it
        raise ProblemError(422, f"namespace {namespace!r} may not hold '/' (keys may)", slug="bad-name")
    _check_memory_name(key, "key")
    text = _json_text(value)  # 422 for NaN and infinities, as a publish
    if len(text.encode()) > PAYLOAD_MAX_BYTES:
        raise ProblemError(413, f"a memory value may hold at most {PAYLOAD_MAX_BYTES // 1024} KiB",
                           slug="payload-too-large")
    await lock_topics(conn, [_memory_topic(namespace)])  # before the first write: see the module docstring
    for _ in range(10):
        current = await (await conn.execute(
            "SELECT version FROM hive_memory WHERE namespace = %s AND key = %s FOR UPDATE",
            (namespace, key))).fetchone()
        if current is not None and if_none_match:
            raise ProblemError(412, f"{namespace}/{key} exists already (If-None-Match: *)", slug="version-mismatch")
        if if_match is not None and (current is None or current["version"] != if_match):
            raise ProblemError(412, f"{namespace}/{key} is at version {current['version'] if current else 'none'}, "
                                    f"not {if_match}; read it again", slug="version-mismatch",
                               current_version=current["version"] if current else None)
        if current is None:
            # Another writer may create it meanwhile: then nothing is inserted, and this
            # write is decided again against what that one made (locked this time).
            row = await (await conn.execute(
                "INSERT INTO hive_memory (namespace, key, value, updated_by) VALUES (%s, %s, %s::jsonb, %s) "
                "ON CONFLICT (namespace, key) DO NOTHING RETURNING *", (namespace, key, text, actor))).fetchone()
            if row is None:
                continue
        else:
            row = await (await conn.execute(
                "UPDATE hive_memory SET value = %s::jsonb, version = version + 1, updated_at = now(), updated_by = %s "
                "WHERE namespace = %s AND key = %s RETURNING *", (text, actor, namespace, key))).fetchone()
        entry = MemoryEntry(**row)
        await _memory_event(conn, entry=entry, change="set", actor=actor)
        return entry, current is None
    raise ProblemError(409, f"{namespace}/{key} kept being created and deleted meanwhile; try again",
                       slug="memory-busy")


async def memory_delete(conn: AsyncConnection, *, namespace: str, key: str, actor: str,
                        if_match: int | None) -> None:
    """Deletes a value (412 on a stale If-Match) and publishes the change. Call in a transaction."""
    await lock_topics(conn, [_memory_topic(namespace)])
    entry = await memory_get(conn, namespace=namespace, key=key, for_update=True)
    if if_match is not None and entry.version != if_match:
        raise ProblemError(412, f"{namespace}/{key} is at version {entry.version}, not {if_match}",
                           slug="version-mismatch", current_version=entry.version)
    await conn.execute("DELETE FROM hive_memory WHERE namespace = %s AND key = %s", (namespace, key))
    await _memory_event(conn, entry=entry, change="deleted", actor=actor)


def _memory_topic(namespace: str) -> str:
    return MEMORY_TOPIC_PREFIX + re.sub(r"[^A-Za-z0-9_-]", "_", namespace)


async def _memory_event(conn: AsyncConnection, *, entry: MemoryEntry, change: str, actor: str) -> None:
    topic = _memory_topic(entry.namespace)
    event = MessageIn(json={"change": change, "namespace": entry.namespace, "key": entry.key,
                            "version": entry.version, "value": entry.value if change == "set" else None})
    await publish(conn, topic=topic, messages=[event], sender=actor)
