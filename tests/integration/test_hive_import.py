"""The legacy hivemind.db import: every row accounted for, order and time kept, odd shapes,
idempotency, atomicity, and what the API and a subscriber see afterwards."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from alai.server import streams
from alai.server.hive import import_source, importer, service
from alai.server.problems import ProblemError
from alai.wire.hive import MessageIn

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "tests" / "fixtures" / "make_legacy_dbs.py"
HIVE_TABLES = ("hive_messages", "hive_topics", "hive_memory", "hive_agents", "hive_imports", "hive_import_rows")


def make_sample(folder: Path, messages: int) -> Path:
    subprocess.run([sys.executable, str(GENERATOR), str(folder), "--tasks", "1", "--messages", str(messages)],
                   check=True, capture_output=True)
    return folder / "hivemind.db"


def source_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        names = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {name: db.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in HIVE_TABLES}


def checksum(url: str) -> str:
    """Everything the import writes (but its own log), as one md5."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT md5(concat_ws('|', "
            "(SELECT string_agg(m::text, ',' ORDER BY id) FROM hive_messages m), "
            "(SELECT string_agg(t::text, ',' ORDER BY name) FROM hive_topics t), "
            "(SELECT string_agg(k::text, ',' ORDER BY namespace, key) FROM hive_memory k), "
            "(SELECT string_agg(a::text, ',' ORDER BY name) FROM hive_agents a), "
            "(SELECT string_agg(r::text, ',' ORDER BY source_sha256, source_table, source_key) "
            " FROM hive_import_rows r)))").fetchone()[0]


def rows(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


async def run_import(url: str, path: Path, *, mapping: dict | None = None, dry_run: bool = False):
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        async with conn.transaction():
            return await importer.import_legacy(conn, path=path, mapping=mapping, dry_run=dry_run, actor="tester")


@pytest.fixture(autouse=True)
def clean_hive(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE hive_messages, hive_topics, hive_memory, hive_agents, hive_imports, hive_import_rows, "
                     "hive_idempotency RESTART IDENTITY CASCADE")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample(tmp_path_factory.mktemp("legacy"), messages=1500)


def legacy_messages(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, channel, sender, content, metadata, created_at FROM messages "
                          "ORDER BY id").fetchall()


async def test_the_sample_is_imported_row_for_row_in_order(database_url, sample):
    report = await run_import(database_url, sample)
    source = source_counts(sample)
    assert counts(database_url) == {
        "hive_messages": source["messages"], "hive_topics": 5, "hive_memory": source["memories"],
        "hive_agents": source["agents"], "hive_imports": 1, "hive_import_rows": sum(source.values())}
    assert dict(rows(database_url, "SELECT source_table, count(*) FROM hive_import_rows GROUP BY 1")) == source
    by_table = {item.table: item for item in report.tables}
    for name, count in source.items():
        assert (by_table[name].rows_read, by_table[name].rows_written, by_table[name].rows_with_problems) == \
            (count, count, 0)
    assert by_table["hive_import_rows"].rows_written == sum(source.values())
    assert report.topic_map == {channel: channel for channel in
                                ("agents.status", "tasks.updates", "tenders.new", "email.inbox", "alerts")}
    assert report.column_map["messages.channel"] == "hive_messages.topic" and not report.already_imported

    legacy = legacy_messages(sample)
    imported = rows(database_url, "SELECT id, topic, sender, content_type, payload, headers, created_at, key "
                                  "FROM hive_messages ORDER BY id")
    assert len(imported) == len(legacy)
    for (_, channel, sender, content, metadata, created), new in zip(legacy, imported, strict=True):
        assert new[1:3] == (channel, sender)
        if content.startswith("{"):
            assert new[3:5] == ("json", json.loads(content))
        else:
            assert new[3:5] == ("text", content)
        assert new[5] == ({key: str(value) for key, value in json.loads(metadata).items()} if metadata else {})
        assert new[6] == datetime.fromisoformat(created).replace(tzinfo=UTC)
        assert new[7] is None
    ids = [row[0] for row in imported]
    assert ids == sorted(ids)
    # One transaction: positions (tx, id) follow the ids, so the stream order is the legacy order.
    assert len({tx for (tx,) in rows(database_url, "SELECT DISTINCT tx::text FROM hive_messages")}) == 1
    links = dict(rows(database_url, "SELECT source_key, target_id FROM hive_import_rows "
                                    "WHERE source_table = 'messages'"))
    assert [links[str(row[0])] for row in legacy] == [str(new_id) for new_id in ids]

    # The topics' counters are those a publisher would have left.
    per_channel = Counter(row[1] for row in legacy)
    last = {}
    for row in legacy:
        last[row[1]] = max(last.get(row[1], row[5]), row[5])
    topics = {row[0]: row[1:] for row in rows(database_url, "SELECT name, message_count, last_message_at, created_by "
                                                            "FROM hive_topics")}
    assert {name: value[0] for name, value in topics.items()} == dict(per_channel)
    assert {name: value[1] for name, value in topics.items()} == {
        name: datetime.fromisoformat(moment).replace(tzinfo=UTC) for name, moment in last.items()}
    assert {value[2] for value in topics.values()} == {"tester"}

    verbatim = dict(rows(database_url, "SELECT source_key, data FROM hive_import_rows WHERE source_table = 'messages'"))
    first = legacy[0]
    assert verbatim[str(first[0])] == dict(zip(("id", "channel", "sender", "content", "metadata", "created_at"),
                                               first, strict=True))

    with sqlite3.connect(sample) as db:
        memories = db.execute("SELECT key, value, agent, updated_at FROM memories").fetchall()
        agents = db.execute("SELECT name, status, last_seen, capabilities FROM agents").fetchall()
    stored = {(row[0], row[1]): row[2:] for row in rows(database_url, "SELECT namespace, key, value, version, "
                                                                     "updated_at, updated_by FROM hive_memory")}
    for key, value, agent, updated in memories:
        assert stored[(agent or "legacy", key)] == (value, 1, datetime.fromisoformat(updated).replace(tzinfo=UTC),
                                                    agent or "import")
    assert report.namespace_map == {agent: agent for (_, _, agent, _) in memories if agent}
    assert rows(database_url, "SELECT name, status, last_seen, capabilities, metadata FROM hive_agents ORDER BY name") \
        == sorted((name, status, datetime.fromisoformat(seen).replace(tzinfo=UTC), json.loads(capabilities), {})
                  for name, status, seen, capabilities in agents)


async def test_a_second_run_changes_nothing(database_url, sample):
    await run_import(database_url, sample)
    before, digest = counts(database_url), checksum(database_url)
    again = await run_import(database_url, sample)
    assert again.already_imported and not again.dry_run
    assert all(item.rows_written == 0 for item in again.tables)
    assert "was imported on" in again.warnings[0]
    assert counts(database_url) == before and checksum(database_url) == digest


async def test_a_dry_run_writes_nothing_and_counts_like_a_real_run(database_url, sample):
    dry = await run_import(database_url, sample, dry_run=True)
    assert dry.dry_run and not dry.already_imported
    assert counts(database_url) == dict.fromkeys(HIVE_TABLES, 0)
    real = await run_import(database_url, sample)
    assert [t.model_dump() for t in dry.tables] == [t.model_dump() for t in real.tables]
    assert dry.topic_map == real.topic_map and dry.warnings == real.warnings


def build_odd_file(path: Path) -> Path:
    """Another HiveMind's idea of its database: other columns, odd channel names, broken rows."""
    db = sqlite3.connect(path)
    db.executescript("""
    CREATE TABLE messages (id BIGINT PRIMARY KEY, channel TEXT, sender TEXT, content TEXT, metadata TEXT,
      created_at, thread TEXT);
    CREATE TABLE memories (key TEXT PRIMARY KEY, value TEXT, agent TEXT, updated_at TEXT, ttl INTEGER);
    CREATE TABLE agents (name TEXT, status TEXT, last_seen TEXT, capabilities TEXT, model TEXT);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT);
    """)
    # Inserted out of id order (BIGINT is not the rowid): the import follows the ids, not the file.
    db.executemany("INSERT INTO messages VALUES (?,?,?,?,?,?,?)", [
        (3, "team/alerts", "coder", '{"level": "warn"}', '{"priority": 2, "trace": "t-1", "tags": ["a"]}',
         "2024-03-05T10:00:02+01:00", None),
        (1, "general chat", "john", "hello", None, 1709632800, "th-1"),
        (2, "general_chat", "ann", "[1, 2]", "not json{", 1709632801000, None),
        (4, None, None, "{broken", '["x"]', "not a time", None),
        (5, "café/日本", "bot", "42", "", "2024-03-05 09:00:05", None),
        (6, "general chat", "john", None, None, None, None),
        (7, "ok.topic", "bot", "text with \x00 NUL", '{"a": "b"}', "2024-03-05T09:00:07Z", None),
        (8, "ok.topic", "bot", '{"n": 123456789012345678901234567890}', '{"big": 123456789012345678901234567890}',
         "2024-03-05T09:00:08Z", None),
    ])
    db.executemany("INSERT INTO memories VALUES (?,?,?,?,?)", [
        ("plan/today", '{"steps": [1, 2]}', "coder", "2024-03-05T10:00:00Z", None),
        ("note", "just words", None, "1709632800", 60),
        ("has space", "[broken", "team lead", "yesterday", None),
        ("n", "7", "coder", None, None),
        ("has_space", "other", "team lead", "2024-03-05T10:00:00Z", None),  # a fine key keeps its name
        ("k/1", "v", "ops/bot", "2024-03-05T10:00:00Z", None),
    ])
    db.executemany("INSERT INTO agents VALUES (?,?,?,?,?)", [
        ("coder", "busy", "2024-03-05T10:00:00Z", '["code", "review"]', "gpt"),
        ("tender-bot", None, "last week", "search, write", None),
        (None, "idle", None, None, None),
    ])
    db.execute("INSERT INTO settings VALUES ('theme', 'dark')")
    db.commit()
    db.close()
    return path


async def test_odd_shapes_are_mapped_and_their_problems_recorded(database_url, tmp_path):
    path = build_odd_file(tmp_path / "odd.db")
    report = await run_import(database_url, path)
    assert dict(rows(database_url, "SELECT source_table, count(*) FROM hive_import_rows GROUP BY 1")) == \
        source_counts(path)
    assert report.topic_map == {"general chat": "general_chat-2", "general_chat": "general_chat",
                                "team/alerts": "team.alerts", "café/日本": "cafe._", "ok.topic": "ok.topic",
                                "(none)": "legacy.no-channel"}
    assert any("'general chat' is not a topic name" in warning for warning in report.warnings)

    messages = rows(database_url, "SELECT id, topic, sender, content_type, payload, headers, created_at "
                                  "FROM hive_messages ORDER BY id")
    utc = UTC
    assert [row[1:6] for row in messages] == [
        ("general_chat-2", "john", "text", "hello", {"thread": "th-1"}),
        ("general_chat", "ann", "json", [1, 2], {"metadata": "not json{"}),
        ("team.alerts", "coder", "json", {"level": "warn"}, {"priority": "2", "trace": "t-1", "tags": '["a"]'}),
        ("legacy.no-channel", "import", "text", "{broken", {"metadata": '["x"]'}),
        ("cafe._", "bot", "json", 42, {}),
        ("general_chat-2", "john", "json", None, {}),
        ("ok.topic", "bot", "text", "text with  NUL", {"a": "b"}),
        ("ok.topic", "bot", "json", {"n": 123456789012345678901234567890}, {"big": "123456789012345678901234567890"}),
    ]
    times = [row[6] for row in messages]
    assert times[:3] == [datetime(2024, 3, 5, 10, 0, 0, tzinfo=utc), datetime(2024, 3, 5, 10, 0, 1, tzinfo=utc),
                         datetime(2024, 3, 5, 9, 0, 2, tzinfo=utc)]
    assert times[3] == times[2]  # a bad time: the previous message's
    assert times[4] == datetime(2024, 3, 5, 9, 0, 5, tzinfo=utc) and times[5] == times[4]

    problems = dict(rows(database_url, "SELECT source_table || ' ' || source_key, problems FROM hive_import_rows "
                                       "WHERE problems <> '{}'"))
    assert any("metadata is not valid JSON" in p for p in problems["messages 2"])
    assert any("no channel" in p for p in problems["messages 4"])
    assert any("no sender" in p for p in problems["messages 4"])
    assert any("content looks like JSON but is not valid" in p for p in problems["messages 4"])
    assert any("metadata is not a JSON object" in p for p in problems["messages 4"])
    assert any("'not a time' is not a timestamp" in p for p in problems["messages 4"])
    assert any("no content" in p for p in problems["messages 6"])
    assert any("NUL characters removed" in p for p in problems["messages 7"])
    assert "messages 1" not in problems and "messages 3" not in problems
    assert any("messages 4: no channel" in warning for warning in report.warnings)
    by_table = {item.table: item for item in report.tables}
    assert (by_table["messages"].rows_read, by_table["messages"].rows_written,
            by_table["messages"].rows_with_problems) == (8, 8, 4)

    memories = {row[:2]: row[2:] for row in rows(database_url, "SELECT namespace, key, value, updated_by "
                                                               "FROM hive_memory")}
    assert memories[("coder", "plan/today")] == ({"steps": [1, 2]}, "coder")
    assert memories[("legacy", "note")] == ("just words", "import")
    assert memories[("team_lead", "has_space-2")] == ("[broken", "team lead")
    assert memories[("team_lead", "has_space")] == ("other", "team lead")
    assert memories[("coder", "n")] == (7, "coder")
    assert memories[("ops_bot", "k/1")] == ("v", "ops/bot")  # a namespace is one segment of the route
    assert report.namespace_map == {"coder": "coder", "team lead": "team_lead", "ops/bot": "ops_bot"}
    assert any("imported as 'has_space-2'" in p for p in problems["memories has space"])
    assert "memories has_space" not in problems
    assert any("value looks like JSON but is not valid" in p for p in problems["memories has space"])
    assert any("'yesterday' is not a timestamp" in p for p in problems["memories has space"])
    assert any("ttl" in warning and "hive_import_rows" in warning for warning in report.warnings)

    agents = {row[0]: row[1:] for row in rows(database_url, "SELECT name, status, last_seen, capabilities, metadata "
                                                            "FROM hive_agents")}
    assert agents["coder"] == ("busy", datetime(2024, 3, 5, 10, tzinfo=utc), ["code", "review"], {"model": "gpt"})
    assert agents["tender-bot"] == (None, None, ["search", "write"], {"last_seen": "last week"})
    assert agents["unnamed-rowid:3"][0] == "idle"
    assert any("split at commas" in p for p in problems["agents rowid:2"])
    assert any("no name" in p for p in problems["agents rowid:3"])
    assert dict(rows(database_url, "SELECT source_key, data FROM hive_import_rows WHERE source_table = 'settings'")) \
        == {"theme": {"key": "theme", "value": "dark"}}
    assert any("'settings' is not HiveMind data" in warning for warning in report.warnings)

    before = checksum(database_url)
    again = await run_import(database_url, path)
    assert again.already_imported and checksum(database_url) == before


async def test_a_mapping_overrides_what_is_detected(database_url, tmp_path):
    path = tmp_path / "custom.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE log (n INTEGER PRIMARY KEY, room TEXT, who TEXT, body TEXT, at INTEGER)")
        db.executemany("INSERT INTO log VALUES (?,?,?,?,?)", [(1, "Lobby", "a", "hi", 1700000000),
                                                              (2, "ops room", "b", "yo", 1700000001)])
        db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT, who TEXT)")
        db.execute("INSERT INTO kv VALUES ('x', '1', 'a')")
    db.close()
    mapping = {"tables": {"messages": "log", "memories": "kv", "agents": None},
               "columns": {"messages": {"topic": "room", "sender": "who", "content": "body", "created_at": "at"},
                           "memories": {"key": "k", "value": "v", "agent": "who"}},
               "topics": {"ops room": "ops.room"}, "memory_namespace": "imported"}
    report = await run_import(database_url, path, mapping=mapping)
    assert rows(database_url, "SELECT topic, sender, payload FROM hive_messages ORDER BY id") == [
        ("Lobby", "a", "hi"), ("ops.room", "b", "yo")]
    assert rows(database_url, "SELECT namespace, key, value FROM hive_memory") == [("imported", "x", 1)]
    assert report.topic_map == {"Lobby": "Lobby", "ops room": "ops.room"}
    assert report.column_map["log.room"] == "hive_messages.topic"


@pytest.mark.parametrize("mapping, message", [
    ({"topics": {"a b": "not a topic!"}}, "not a topic name"),
    ({"tables": {"messages": "missing"}}, "no table 'missing'"),
    ({"columns": {"messages": {"topic": "nope"}}}, "has no column 'nope'"),
    ({"statuses": {}}, "unknown mapping key"),
    ({"memory_namespace": "has space"}, "memory_namespace"),
])
async def test_a_bad_mapping_is_refused_before_anything_is_written(database_url, sample, mapping, message):
    with pytest.raises(ProblemError) as raised:
        await run_import(database_url, sample, mapping=mapping)
    assert raised.value.status == 422 and message in raised.value.detail
    assert counts(database_url) == dict.fromkeys(HIVE_TABLES, 0)


async def test_a_failure_half_way_leaves_the_database_as_it_was(database_url, sample):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'disk full (simulated)'; END $$")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON hive_agents FOR EACH ROW EXECUTE FUNCTION refuse()")
    try:
        with pytest.raises(ProblemError) as raised:
            await run_import(database_url, sample)
        assert raised.value.status == 422 and "writing the agents" in raised.value.detail
        assert counts(database_url) == dict.fromkeys(HIVE_TABLES, 0)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER refuse ON hive_agents")
            conn.execute("DROP FUNCTION refuse()")
    report = await run_import(database_url, sample)  # and nothing stops a retry
    assert not report.already_imported and counts(database_url)["hive_messages"] == source_counts(sample)["messages"]


async def test_another_export_adds_only_what_is_new(database_url, tmp_path):
    first = tmp_path / "first.db"
    with sqlite3.connect(first) as db:
        db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, channel TEXT, sender TEXT, content TEXT, "
                   "created_at TEXT)")
        db.execute("CREATE TABLE memories (key TEXT PRIMARY KEY, value TEXT, agent TEXT)")
        db.executemany("INSERT INTO messages VALUES (?,?,?,?,?)", [
            (1, "a", "x", "one", "2024-01-01T00:00:01"), (2, "b", "x", "two", "2024-01-01T00:00:02")])
        db.execute("INSERT INTO memories VALUES ('k', '1', 'x')")
    db.close()
    await run_import(database_url, first)
    second = tmp_path / "second.db"
    second.write_bytes(first.read_bytes())
    with sqlite3.connect(second) as db:
        db.executemany("INSERT INTO messages VALUES (?,?,?,?,?)", [
            (3, "a", "y", "three", "2024-01-01T00:00:03"), (4, "c", "y", "four", "2024-01-01T00:00:04")])
        db.execute("UPDATE memories SET value = '2'")
    db.close()
    report = await run_import(database_url, second)
    assert not report.already_imported
    assert [row for row in rows(database_url, "SELECT topic, payload FROM hive_messages ORDER BY id")] == [
        ("a", "one"), ("b", "two"), ("a", "three"), ("c", "four")]
    assert dict(rows(database_url, "SELECT name, message_count FROM hive_topics")) == {"a": 2, "b": 1, "c": 1}
    assert rows(database_url, "SELECT value, version FROM hive_memory") == [(1, 1)]  # left as it was
    written = {item.table: item.rows_written for item in report.tables}
    assert written == {"memories": 0, "messages": 2, "hive_import_rows": 5}
    assert any("2 row(s) of 'messages' were imported before" in warning for warning in report.warnings)
    assert any("exists already; left unchanged" in warning for warning in report.warnings)
    # The verbatim rows of the second file point at the messages the first one wrote.
    assert rows(database_url, "SELECT count(DISTINCT target_id) FROM hive_import_rows "
                              "WHERE source_table = 'messages'") == [(4,)]


async def test_counters_of_a_topic_in_use_add_up(database_url, sample):
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True,
                                                     row_factory=psycopg.rows.dict_row) as conn:
        async with conn.transaction():
            await service.publish(conn, topic="alerts", messages=[MessageIn(text="live")], sender="someone")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE hive_topics SET retention_max_count = 100")
    live_at = rows(database_url, "SELECT last_message_at FROM hive_topics")[0][0]
    report = await run_import(database_url, sample)
    legacy = Counter(row[1] for row in legacy_messages(sample))
    assert rows(database_url, "SELECT message_count, last_message_at, created_by FROM hive_topics "
                              "WHERE name = 'alerts'") == [(legacy["alerts"] + 1, live_at, "someone")]
    assert "topic 'alerts' keeps at most 100 messages: imported messages beyond that are pruned within a minute" \
        in report.warnings


@pytest.mark.parametrize("tables, kind", [
    (["messages", "memories"], "hive"), (["tasks", "task_comments"], "mc"), (["tasks", "messages"], "both"),
    (["other"], None),
])
def test_kind_of_tells_the_files_apart(tmp_path, tables, kind):
    path = tmp_path / "x.db"
    with sqlite3.connect(path) as db:
        for table in tables:
            db.execute(f"CREATE TABLE {table} (id INTEGER)")
    db.close()
    assert import_source.kind_of(path) == kind


async def test_the_api_imports_and_serves_what_came(app, client, database_url, sample):
    body = sample.read_bytes()
    headers = {"Content-Type": "application/vnd.sqlite3"}
    hub: streams.Hub = app.state.hive_hub
    received: list = []
    expected = source_counts(sample)["messages"]

    async def subscriber() -> None:
        async for message in hub.subscribe(after=streams.START, accepts=lambda m: True):
            if message is not None:
                received.append(message)
                if len(received) == expected:
                    return

    listening = asyncio.create_task(subscriber())
    dry = await client.post("/v1/hive/import", params={"dry_run": "true", "source_name": "hm.db"}, content=body,
                            headers=headers)
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["source"] == "hm.db"
    assert counts(database_url)["hive_messages"] == 0
    done = await client.post("/v1/hive/import", content=body, headers=headers)
    assert done.status_code == 200 and done.json()["already_imported"] is False
    await asyncio.wait_for(listening, 30)
    # A subscriber from the start saw every message once, in the legacy order, with its time.
    legacy = legacy_messages(sample)
    assert [(m.topic, m.sender, m.created_at) for m in received] == [
        (row[1], row[2], datetime.fromisoformat(row[5]).replace(tzinfo=UTC)) for row in legacy]
    assert [m.id for m in received] == sorted(m.id for m in received)

    history = (await client.get("/v1/hive/topics/alerts/messages", params={"limit": 1000})).json()["items"]
    alerts = [row for row in legacy if row[1] == "alerts"]
    assert alerts and [(m["sender"], datetime.fromisoformat(m["created_at"])) for m in history] == [
        (row[2], datetime.fromisoformat(row[5]).replace(tzinfo=UTC)) for row in alerts]
    topic = (await client.get("/v1/hive/topics/alerts")).json()
    assert topic["message_count"] == len(alerts)

    with sqlite3.connect(sample) as db:
        key, value, agent = db.execute("SELECT key, value, agent FROM memories WHERE agent IS NOT NULL "
                                       "LIMIT 1").fetchone()
    memory = await client.get(f"/v1/hive/memory/{agent}/{key}")
    assert memory.status_code == 200 and "/" in key
    assert memory.json()["value"] == value and memory.headers["ETag"] == '"1"'
    listed = (await client.get(f"/v1/hive/memory/{agent}", params={"prefix": "memory/", "limit": 1000})).json()
    assert len(listed) == rows(database_url, "SELECT count(*) FROM hive_memory WHERE namespace = %s", (agent,))[0][0]
    agents = (await client.get("/v1/hive/agents")).json()
    assert [a["name"] for a in agents] == sorted(["orchestrator", "tender-bot", "email-triage", "coder", "researcher"])
    assert agents[0]["capabilities"] == ["chat"]

    again = await client.post("/v1/hive/import", content=body, headers={"Content-Type": "application/octet-stream"})
    assert again.json()["already_imported"] is True
    assert rows(database_url, "SELECT imported_by FROM hive_imports") == [("admin-token",)]
    wrong_type = await client.post("/v1/hive/import", content=body, headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and wrong_type.headers["content-type"] == "application/problem+json"
    not_sqlite = await client.post("/v1/hive/import", content=b"hello world, not a database", headers=headers)
    assert not_sqlite.status_code == 422 and "not an SQLite database" in not_sqlite.json()["detail"]
    bad_map = await client.post("/v1/hive/import", params={"map": "[1"}, content=body, headers=headers)
    assert bad_map.status_code == 422 and "JSON object" in bad_map.json()["detail"]


async def test_the_import_and_agents_routes_need_their_scopes(anonymous_client):
    assert (await anonymous_client.post("/v1/hive/import", content=b"x")).status_code == 401
    assert (await anonymous_client.get("/v1/hive/agents")).status_code == 401
