"""The legacy Mission Control import: every row accounted for, odd shapes, idempotency, atomicity."""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import psycopg
import pytest

from alai.server.mc import importer
from alai.server.problems import ProblemError

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "tests" / "fixtures" / "make_legacy_dbs.py"
STATUSES = ["todo", "in_progress", "blocked", "review", "done", "cancelled"]
CLOSED = ["done", "cancelled"]
MC_TABLES = ("mc_tasks", "mc_comments", "mc_history", "mc_imports", "mc_import_rows")


def make_sample(folder: Path, tasks: int) -> Path:
    subprocess.run([sys.executable, str(GENERATOR), str(folder), "--tasks", str(tasks), "--messages", "1"],
                   check=True, capture_output=True)
    return folder / "mission-control.db"


def source_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        names = [row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        return {name: db.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in MC_TABLES}


def tasks_checksum(url: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY id), '')) FROM mc_tasks t").fetchone()[0]


def rows(url: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


async def run_import(url: str, path: Path, *, mapping: dict | None = None, dry_run: bool = False):
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        async with conn.transaction():
            return await importer.import_legacy(conn, path=path, mapping=mapping, dry_run=dry_run, actor="tester",
                                                statuses=STATUSES, closed_statuses=CLOSED)


@pytest.fixture(autouse=True)
def clean_mc(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE mc_tasks, mc_comments, mc_history, mc_imports, mc_import_rows, mc_events CASCADE")
        conn.execute("ALTER SEQUENCE mc_task_number RESTART")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample(tmp_path_factory.mktemp("legacy"), tasks=150)


async def test_the_sample_is_imported_row_for_row(database_url, sample):
    report = await run_import(database_url, sample)
    source = source_counts(sample)
    assert counts(database_url) == {"mc_tasks": source["tasks"], "mc_comments": source["task_comments"],
                                    "mc_history": source["task_history"], "mc_imports": 1,
                                    "mc_import_rows": sum(source.values())}
    per_table = dict(rows(database_url, "SELECT source_table, count(*) FROM mc_import_rows GROUP BY 1"))
    assert per_table == source
    by_table = {item.table: item for item in report.tables}
    for name, count in source.items():
        assert by_table[name].rows_read == by_table[name].rows_written == count
        assert by_table[name].rows_with_problems == 0
    assert by_table["mc_import_rows"].rows_written == sum(source.values())
    assert report.status_map == {status: status for status in STATUSES}
    assert report.priority_map == {str(n): n for n in range(5)}
    assert report.column_map["tasks.tags"] == "mc_tasks.labels" and report.column_map["tasks.completed_at"] == \
        "mc_tasks.closed_at"

    with sqlite3.connect(sample) as db:
        legacy = {row[0]: row for row in db.execute(
            "SELECT id, title, status, priority, tags, parent_id, created_at, completed_at, metadata, due_date "
            "FROM tasks")}
    imported = {row[0]: row for row in rows(database_url, (
        "SELECT id, title, status, priority, labels, parent_id, created_at, closed_at, metadata, due_date, "
        "created_by FROM mc_tasks"))}
    assert imported.keys() == legacy.keys()
    for task_id, old in legacy.items():
        new = imported[task_id]
        assert new[1:4] == old[1:4]
        assert new[4] == json.loads(old[4]) and new[5] == old[5]
        assert new[6] == datetime.fromtimestamp(old[6] / 1000, UTC)
        if old[2] in CLOSED:
            assert new[7] == datetime.fromtimestamp(old[7] / 1000, UTC)
        else:
            assert new[7] is None
        assert new[8] == json.loads(old[8])
        assert new[9] == (date.fromisoformat(old[9]) if old[9] else None)
        assert new[10] == "import"
    history = rows(database_url, "SELECT DISTINCT field, source FROM mc_history")
    assert history == [("status", "import")]
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT nextval('mc_task_number')").fetchone()[0] == source["tasks"] + 1
    comment_targets = rows(database_url, "SELECT count(*) FROM mc_import_rows r JOIN mc_comments c "
                                         "ON c.id::text = r.target_id WHERE r.source_table = 'task_comments'")
    assert comment_targets == [(source["task_comments"],)]


async def test_a_second_run_changes_nothing(database_url, sample):
    await run_import(database_url, sample)
    before, checksum = counts(database_url), tasks_checksum(database_url)
    again = await run_import(database_url, sample)
    assert again.already_imported and not again.dry_run
    assert all(item.rows_written == 0 for item in again.tables)
    assert counts(database_url) == before and tasks_checksum(database_url) == checksum


async def test_a_dry_run_writes_nothing_and_counts_like_a_real_run(database_url, sample):
    dry = await run_import(database_url, sample, dry_run=True)
    assert dry.dry_run and not dry.already_imported
    assert counts(database_url) == dict.fromkeys(MC_TABLES, 0)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT is_called FROM mc_task_number").fetchone()[0] is False
    real = await run_import(database_url, sample)
    assert [t.model_dump() for t in dry.tables] == [t.model_dump() for t in real.tables]


def build_odd_file(path: Path) -> Path:
    """Another tool's idea of Mission Control: other names, ISO times, seconds, and broken rows."""
    db = sqlite3.connect(path)
    db.executescript("""
    CREATE TABLE issues (uid TEXT PRIMARY KEY, name TEXT, details TEXT, state TEXT, prio TEXT, owner TEXT,
      labels TEXT, parent TEXT, createdAt TEXT, modified INTEGER, done_at TEXT, due TEXT, extra TEXT, color TEXT);
    CREATE TABLE notes (id INTEGER PRIMARY KEY, task TEXT, user TEXT, text TEXT, created REAL);
    CREATE TABLE audit_log (id INTEGER PRIMARY KEY, task_id TEXT, attribute TEXT, old TEXT, new TEXT, actor TEXT,
      ts TEXT);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT);
    CREATE TABLE pairs (a INTEGER, b INTEGER, PRIMARY KEY (a, b)) WITHOUT ROWID;
    """)
    db.executemany("INSERT INTO issues VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
        ("T-1", "First", "d", "In Progress", "high", "coder", "bug, infra", None, "2024-03-05T10:00:00+01:00",
         1709632800, None, "2024-04-01", '{"a": 1}', "red"),
        ("T-2", None, None, "open", 7, None, '["x"]', None, "1709632800000", None, None, None, None, None),
        ("T-3", "Orphan", None, "todo", 2, None, None, "T-99", "2024-03-05", None, None, None, "not json{", None),
        ("T-4", "Weird", None, "weird", "0", None, None, None, "1709632800000000", None, "2024-03-06 12:00:00",
         "someday", None, None),
        ("T-5", "Closed", None, "closed", None, None, None, "T-1", "2024-03-05T09:00:00Z", None,
         "2024-03-06 12:00:00", None, None, None),
        ("T-6", "Loop a", None, "todo", 2, None, None, "T-7", "2024-03-05T09:00:00Z", None, None, None, None, None),
        ("T-7", "Loop b", None, "todo", 2, None, None, "T-6", "2024-03-05T09:00:00Z", None, None, None, None, None),
    ])
    db.executemany("INSERT INTO notes (task, user, text, created) VALUES (?,?,?,?)", [
        ("T-1", "john", "looks good", 1709632800.5), ("T-404", "john", "lost", 1709632800), ("T-2", None, "", None)])
    db.execute("INSERT INTO audit_log (task_id, attribute, old, new, actor, ts) VALUES "
               "('T-5', 'state', 'open', 'closed', 'john', '2024-03-06T12:00:00Z')")
    db.executemany("INSERT INTO settings VALUES (?, ?)", [("theme", "dark"), ("blob", b"\x00\x01")])
    db.executemany("INSERT INTO pairs VALUES (?, ?)", [(1, 2), (3, 4)])
    db.commit()
    db.close()
    return path


async def test_odd_shapes_are_mapped_and_their_problems_recorded(database_url, tmp_path):
    path = build_odd_file(tmp_path / "odd.db")
    report = await run_import(database_url, path)
    source = source_counts(path)
    per_table = dict(rows(database_url, "SELECT source_table, count(*) FROM mc_import_rows GROUP BY 1"))
    assert per_table == source  # unknown tables too: settings, pairs
    tasks = {row[0]: row[1:] for row in rows(database_url, (
        "SELECT id, title, status, priority, assignee, labels, parent_id, created_at, updated_at, closed_at, due_date,"
        " metadata FROM mc_tasks"))}
    utc = UTC
    assert tasks["T-1"][:5] == ("First", "in_progress", 1, "coder", ["bug", "infra"])
    assert tasks["T-1"][6] == datetime(2024, 3, 5, 9, tzinfo=utc) and tasks["T-1"][7] == datetime(2024, 3, 5, 10,
                                                                                                   tzinfo=utc)
    assert tasks["T-1"][9] == date(2024, 4, 1) and tasks["T-1"][10] == {"a": 1, "color": "red"}
    assert tasks["T-2"][:3] == ("(untitled T-2)", "todo", 4) and tasks["T-2"][6] == datetime(2024, 3, 5, 10,
                                                                                             tzinfo=utc)
    assert tasks["T-3"][5] is None and tasks["T-3"][10] == {"extra": "not json{"}
    assert tasks["T-4"][1] == "todo" and tasks["T-4"][8] is None  # open: no closed_at, the legacy one kept
    assert tasks["T-4"][10]["done_at"] == "2024-03-06 12:00:00" and tasks["T-4"][10]["due"] == "someday"
    assert tasks["T-4"][6] == datetime(2024, 3, 5, 10, tzinfo=utc)  # epoch microseconds
    assert tasks["T-5"][1] == "done" and tasks["T-5"][5] == "T-1" and tasks["T-5"][8] == datetime(2024, 3, 6, 12,
                                                                                                   tzinfo=utc)
    assert [tasks["T-6"][5], tasks["T-7"][5]].count(None) == 1  # the cycle is broken once

    assert report.status_map["weird"] == "todo" and report.status_map["closed"] == "done"
    assert report.priority_map["7"] == 4 and report.priority_map["high"] == 1
    problems = dict(rows(database_url, "SELECT source_table || ' ' || source_key, problems FROM mc_import_rows "
                                       "WHERE problems <> '{}'"))
    assert any("no title" in p for p in problems["issues T-2"])
    assert any("outside 0-4" in p for p in problems["issues T-2"])
    assert any("parent 'T-99' not found" in p for p in problems["issues T-3"])
    assert any("not valid JSON" in p for p in problems["issues T-3"])
    assert any("not in the workflow" in p for p in problems["issues T-4"])
    assert any("cycle" in p for key, found in problems.items() for p in found if key in ("issues T-6", "issues T-7"))
    assert any("'T-404' not found" in p for p in problems["notes 2"])
    assert any("empty comment" in p for p in problems["notes 3"])
    assert "settings" in " ".join(report.warnings) and any("T-404" in w for w in report.warnings)

    comments = rows(database_url, "SELECT task_id, author, body, created_at FROM mc_comments ORDER BY id")
    assert comments == [("T-1", "john", "looks good", datetime(2024, 3, 5, 10, 0, 0, 500000, tzinfo=utc)),
                        ("T-2", "import", "(empty comment)", comments[1][3])]
    assert rows(database_url, "SELECT task_id, field, old_value, new_value, changed_by FROM mc_history") == [
        ("T-5", "status", "todo", "done", "john")]
    by_table = {item.table: item for item in report.tables}
    assert (by_table["notes"].rows_read, by_table["notes"].rows_written, by_table["notes"].rows_with_problems) == \
        (3, 2, 2)
    verbatim = dict(rows(database_url, "SELECT source_key, data FROM mc_import_rows WHERE source_table = 'settings'"))
    assert verbatim == {"theme": {"key": "theme", "value": "dark"},
                        "blob": {"key": "blob", "value": {"$blob_base64": "AAE="}}}
    assert sorted(k for (k,) in rows(database_url, "SELECT source_key FROM mc_import_rows WHERE source_table = "
                                                   "'pairs'")) == ["[1, 2]", "[3, 4]"]

    before, checksum = counts(database_url), tasks_checksum(database_url)
    again = await run_import(database_url, path)
    assert again.already_imported and counts(database_url) == before and tasks_checksum(database_url) == checksum
    assert [(t.table, t.rows_read, 0, t.rows_with_problems) for t in report.tables] == \
        [(t.table, t.rows_read, t.rows_written, t.rows_with_problems) for t in again.tables]
    assert "search vectors" in report.warnings[0] and "nothing was changed" in again.warnings[0]
    assert again.status_map == report.status_map and again.warnings[1:] == report.warnings[1:]


async def test_a_mapping_overrides_what_is_detected(database_url, tmp_path):
    path = tmp_path / "custom.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stuff (n INTEGER PRIMARY KEY, headline TEXT, phase TEXT, urgency TEXT, name TEXT)")
        db.executemany("INSERT INTO stuff VALUES (?,?,?,?,?)", [
            (1, "Alpha", "Phase A", "hot", "ignored"), (2, "Beta", "Phase B", "cold", None)])
    db.close()
    mapping = {"tables": {"tasks": "stuff"},
               "columns": {"tasks": {"id": "n", "title": "headline", "status": "phase", "priority": "urgency"}},
               "statuses": {"Phase A": "todo", "Phase B": "done"}, "priorities": {"hot": 0, "cold": 4}}
    report = await run_import(database_url, path, mapping=mapping)
    assert rows(database_url, "SELECT id, title, status, priority, metadata FROM mc_tasks ORDER BY id") == [
        ("MC-1", "Alpha", "todo", 0, {"name": "ignored"}), ("MC-2", "Beta", "done", 4, {})]
    assert report.status_map == {"Phase A": "todo", "Phase B": "done"}
    assert report.column_map["stuff.headline"] == "mc_tasks.title"


@pytest.mark.parametrize("mapping, message", [
    ({"priorities": {"high": 9}}, "from 0 to 4"),
    ({"statuses": {"open": "nope"}}, "not a workflow status"),
    ({"tables": {"tasks": "missing"}}, "no table 'missing'"),
    ({"columns": {"tasks": {"title": "nope"}}}, "has no column 'nope'"),
    ({"colums": {}}, "unknown mapping key"),
])
async def test_a_bad_mapping_is_refused_before_anything_is_written(database_url, sample, mapping, message):
    with pytest.raises(ProblemError) as raised:
        await run_import(database_url, sample, mapping=mapping)
    assert raised.value.status == 422 and message in raised.value.detail
    assert counts(database_url) == dict.fromkeys(MC_TABLES, 0)


async def test_a_failure_half_way_leaves_the_database_as_it_was(database_url, sample):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'disk full (simulated)'; END $$")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON mc_history FOR EACH ROW EXECUTE FUNCTION refuse()")
    try:
        with pytest.raises(ProblemError) as raised:
            await run_import(database_url, sample)
        assert raised.value.status == 422 and "writing the history" in raised.value.detail
        assert counts(database_url) == dict.fromkeys(MC_TABLES, 0)
        with psycopg.connect(database_url) as conn:
            assert conn.execute("SELECT is_called FROM mc_task_number").fetchone()[0] is False
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP TRIGGER refuse ON mc_history")
            conn.execute("DROP FUNCTION refuse()")
    await run_import(database_url, sample)  # and nothing stops a retry


async def test_another_export_adds_only_what_is_new(database_url, tmp_path):
    first = tmp_path / "first.db"
    with sqlite3.connect(first) as db:
        db.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, title TEXT, status TEXT)")
        db.execute("CREATE TABLE comments (id INTEGER PRIMARY KEY, task_id INTEGER, body TEXT, created_at INTEGER)")
        db.executemany("INSERT INTO tasks VALUES (?,?,?)", [(1, "one", "todo"), (2, "two", "done")])
        db.executemany("INSERT INTO comments VALUES (?,?,?,?)", [(1, 1, "hi", 1700000000), (2, 1, "hi", 1700000000)])
    db.close()
    await run_import(database_url, first)
    second = tmp_path / "second.db"
    second.write_bytes(first.read_bytes())
    with sqlite3.connect(second) as db:
        db.execute("UPDATE tasks SET title = 'one, renamed' WHERE id = 1")
        db.execute("INSERT INTO tasks VALUES (3, 'three', 'todo')")
        db.execute("INSERT INTO comments VALUES (3, 3, 'new', 1700000001)")
        db.execute("INSERT INTO comments VALUES (4, 1, 'hi', 1700000000)")  # a third identical comment
    db.close()
    report = await run_import(database_url, second)
    assert not report.already_imported
    assert rows(database_url, "SELECT id, title FROM mc_tasks ORDER BY id") == [
        ("MC-1", "one"), ("MC-2", "two"), ("MC-3", "three")]  # existing tasks are left as they were
    assert rows(database_url, "SELECT task_id, body FROM mc_comments ORDER BY id") == [
        ("MC-1", "hi"), ("MC-1", "hi"), ("MC-3", "new"), ("MC-1", "hi")]
    written = {item.table: item.rows_written for item in report.tables}
    assert written == {"tasks": 1, "comments": 2, "mc_import_rows": 7}
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT nextval('mc_task_number')").fetchone()[0] == 4


@pytest.mark.parametrize("content, message", [
    (b"hello", "not an SQLite database"),
    (b"SQLite format 3\x00" + b"\xff" * 5000, "not a readable SQLite database"),
])
async def test_a_file_that_is_not_sqlite_is_a_422(database_url, tmp_path, content, message):
    path = tmp_path / "broken.db"
    path.write_bytes(content)
    with pytest.raises(ProblemError) as raised:
        await run_import(database_url, path)
    assert raised.value.status == 422 and message in raised.value.detail
    assert counts(database_url) == dict.fromkeys(MC_TABLES, 0)


async def test_the_api_imports_an_uploaded_file(client, database_url, sample):
    body = sample.read_bytes()
    headers = {"Content-Type": "application/vnd.sqlite3"}
    dry = await client.post("/v1/mc/import", params={"dry_run": "true", "source_name": "mc.db"}, content=body,
                            headers=headers)
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["source"] == "mc.db"
    assert counts(database_url)["mc_tasks"] == 0
    done = await client.post("/v1/mc/import", content=body, headers=headers)
    assert done.status_code == 200 and done.json()["already_imported"] is False
    assert counts(database_url)["mc_tasks"] == source_counts(sample)["tasks"]
    again = await client.post("/v1/mc/import", content=body, headers={"Content-Type": "application/octet-stream"})
    assert again.json()["already_imported"] is True
    imported_by = rows(database_url, "SELECT imported_by FROM mc_imports")
    assert len(imported_by) == 1

    wrong_type = await client.post("/v1/mc/import", content=body, headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and wrong_type.headers["content-type"] == "application/problem+json"
    not_sqlite = await client.post("/v1/mc/import", content=b"hello world, not a database", headers=headers)
    assert not_sqlite.status_code == 422 and "not an SQLite database" in not_sqlite.json()["detail"]
    empty = await client.post("/v1/mc/import", content=b"", headers=headers)
    assert empty.status_code == 422


async def test_the_api_takes_a_mapping_as_json(client, database_url, tmp_path):
    path = tmp_path / "renamed.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE stuff (key TEXT PRIMARY KEY, name TEXT, state TEXT, made INTEGER)")
        db.execute("INSERT INTO stuff VALUES ('X-1', 'renamed columns', 'open', 1700000000)")
    headers = {"Content-Type": "application/octet-stream"}
    mapping = {"tables": {"tasks": "stuff"}, "columns": {"tasks": {"id": "key", "title": "name", "status": "state",
                                                                     "created_at": "made"}},
               "statuses": {"open": "in_progress"}}
    import json

    response = await client.post("/v1/mc/import", params={"map": json.dumps(mapping)}, content=path.read_bytes(),
                                 headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["status_map"]["open"] == "in_progress"
    bad = await client.post("/v1/mc/import", params={"map": "[1, 2"}, content=path.read_bytes(), headers=headers)
    assert bad.status_code == 422 and "JSON object" in bad.json()["detail"]
    assert counts(database_url)["mc_tasks"] == 1


LABELS = ["a,b", 'q"uote', "back\\slash", "{brace}", "NULL", "tab\tnew\nline", "ünï"]


async def test_text_that_is_not_utf8_and_infinite_floats_are_kept(database_url, tmp_path):
    path = tmp_path / "bytes.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT, status TEXT, labels TEXT)")
        db.execute("INSERT INTO tasks VALUES ('T-1', CAST(x'636166e9' AS TEXT), 'todo', NULL), ('T-2', 'fine', 'todo', ?)",
                   (json.dumps(LABELS),))
        db.execute("CREATE TABLE measures (k TEXT PRIMARY KEY, v REAL)")
        db.execute("INSERT INTO measures VALUES ('big', 1e999), ('small', -1e999), ('plain', 1.5), (?, 2.0)",
                   ("we\tird\\key\r\n",))
    await run_import(database_url, path)
    titles = dict(rows(database_url, "SELECT id, title FROM mc_tasks"))
    assert titles == {"T-1": "caf\ufffd", "T-2": "fine"}
    assert rows(database_url, "SELECT labels FROM mc_tasks WHERE id = 'T-2'") == [(LABELS,)]
    verbatim = {(table, key): (data, problems) for table, key, data, problems in rows(
        database_url, "SELECT source_table, source_key, data, problems FROM mc_import_rows")}
    data, problems = verbatim[("tasks", "T-1")]
    assert data["title"] == {"$text_base64": "Y2Fm6Q=="} and any("not valid UTF-8" in p for p in problems)
    assert verbatim[("tasks", "T-2")][0]["title"] == "fine"  # the other rows of that table as they were
    assert verbatim[("tasks", "T-2")][0]["labels"] == json.dumps(LABELS)
    assert verbatim[("measures", "we\tird\\key\r\n")][0] == {"k": "we\tird\\key\r\n", "v": 2.0}
    assert verbatim[("measures", "big")][0]["v"] == {"$float": "inf"}
    assert verbatim[("measures", "small")][0]["v"] == {"$float": "-inf"}
    assert verbatim[("measures", "plain")][0]["v"] == 1.5


def write_search_sample(path: Path) -> list[str]:
    """30 tasks, every third about zebras; returns the ids a search for "zebra" finds."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT, description TEXT, status TEXT)")
        db.executemany("INSERT INTO tasks VALUES (?, ?, ?, 'todo')",
                       [(f"T-{n}", f"task {n}", "zebra crossing" if n % 3 == 0 else "plain") for n in range(30)])
    return sorted(f"T-{n}" for n in range(0, 30, 3))


async def test_imported_tasks_are_found_by_search_before_and_after_indexing(database_url, tmp_path):
    from psycopg.rows import dict_row

    from alai.server.mc import service

    expected = write_search_sample(tmp_path / "search.db")
    await run_import(database_url, tmp_path / "search.db")
    assert rows(database_url, "SELECT count(*) FROM mc_tasks WHERE search IS NULL") == [(30,)]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        async def found() -> list[str]:
            page = await service.list_tasks(conn, where=service.TaskFilter(q="zebra"), sort="id", limit=100,
                                            cursor=None)
            return [task.id for task in page.items]

        assert sorted(await found()) == expected  # computed on the fly for unindexed rows
        assert await service.index_pending_search(conn, batch=20) == 20
        assert await service.index_pending_search(conn, batch=20) == 10
        assert await service.index_pending_search(conn, batch=20) == 0
        assert sorted(await found()) == expected  # through the index
    assert rows(database_url, "SELECT count(*) FROM mc_tasks WHERE search IS NULL") == [(0,)]
    assert rows(database_url, "SELECT DISTINCT version FROM mc_tasks") == [(1,)]  # indexing is not an edit


async def test_the_control_plane_indexes_imported_tasks_in_the_background(client, database_url, tmp_path):
    expected = write_search_sample(tmp_path / "search.db")
    await run_import(database_url, tmp_path / "search.db")
    created = await client.post("/v1/mc/tasks", json={"title": "a zebra made by the API"})
    assert created.status_code == 201

    async def found() -> list[str]:
        page = (await client.get("/v1/mc/tasks", params={"q": "zebra", "limit": 100, "sort": "id"})).json()
        return sorted(task["id"] for task in page["items"])

    assert await found() == sorted([*expected, created.json()["id"]])
    for _ in range(100):
        if rows(database_url, "SELECT count(*) FROM mc_tasks WHERE search IS NULL") == [(0,)]:
            break
        await asyncio.sleep(0.1)
    assert rows(database_url, "SELECT count(*) FROM mc_tasks WHERE search IS NULL") == [(0,)]
    assert await found() == sorted([*expected, created.json()["id"]])
    renamed = await client.patch("/v1/mc/tasks/T-3", json={"description": "no stripes"}, headers={"If-Match": '"1"'})
    assert renamed.status_code == 200
    assert "T-3" not in await found()


async def test_progress_is_reported_per_stage_up_to_its_total(database_url, sample):
    seen: dict[str, list[tuple[int, int]]] = {}
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        async with conn.transaction():
            await importer.import_legacy(conn, path=sample, mapping=None, dry_run=False, actor="tester",
                                         statuses=STATUSES, closed_statuses=CLOSED,
                                         progress=lambda stage, done, total: seen.setdefault(stage, []).append(
                                             (done, total)))
    source = source_counts(sample)
    assert seen["write mc_import_rows"][-1] == (sum(source.values()),) * 2
    assert seen["write mc_tasks"][-1] == (source["tasks"],) * 2
    for stage, steps in seen.items():
        done = [step[0] for step in steps]
        assert done == sorted(done), stage
        assert {step[1] for step in steps} == {steps[-1][1]}, stage  # one total per stage


async def test_the_import_leaves_nothing_to_the_garbage_collector(database_url, sample):
    # What the import builds is freed when it returns: a reference cycle through the
    # plan would keep every row until a full collection, which costs the caller ~0.1 s.
    gc.collect()
    gc.disable()
    try:
        await run_import(database_url, sample)
        left = gc.collect()
    finally:
        gc.enable()
    assert left < 300, left


async def test_a_file_without_tasks_keeps_every_row_verbatim(database_url, tmp_path):
    path = tmp_path / "no-tasks.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE comments (id INTEGER PRIMARY KEY, task_id TEXT, body TEXT)")
        db.execute("INSERT INTO comments VALUES (1, 'T-1', 'orphan')")
        db.execute("CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT)")
        db.execute("INSERT INTO settings VALUES ('theme', 'dark')")
    db.close()
    report = await run_import(database_url, path)
    assert any("no table of tasks" in warning for warning in report.warnings)
    assert counts(database_url)["mc_tasks"] == 0
    kept = rows(database_url, "SELECT source_table, data, problems FROM mc_import_rows ORDER BY source_table")
    assert [(table, data) for table, data, _ in kept] == [
        ("comments", {"id": 1, "task_id": "T-1", "body": "orphan"}), ("settings", {"k": "theme", "v": "dark"})]
    assert any("not found" in problem for problem in kept[0][2])


async def test_a_table_of_tasks_that_is_also_the_comments_is_kept_with_both_roles_problems(database_url, tmp_path):
    path = tmp_path / "both.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (id TEXT PRIMARY KEY, title TEXT, task_id TEXT, body TEXT)")
        db.executemany("INSERT INTO items VALUES (?,?,?,?)", [("T-1", "First", "T-1", "a note"),
                                                              ("T-2", "Second", "T-9", "lost note")])
    db.close()
    await run_import(database_url, path, mapping={"tables": {"tasks": "items", "comments": "items"}})
    comment_ids = dict(rows(database_url, "SELECT body, id::text FROM mc_comments"))
    kept = {key: (target, problems) for key, target, problems in rows(
        database_url, "SELECT source_key, target_id, problems FROM mc_import_rows")}
    # Each row became a task and a comment: its verbatim copy names the latter and has
    # the problems of both (the second's comment points at a task that does not exist).
    assert kept["T-1"][0] == comment_ids["a note"]
    assert any("'T-9' not found" in problem for problem in kept["T-2"][1])
