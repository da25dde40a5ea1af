"""`alai admin import hivemind.db` end to end: the real CLI on a generated sample, then a real
`alai serve` whose subscribers and routes see what came."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from websockets.sync.client import connect

from tests.support.processes import ALAI, run_cli

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "tests" / "fixtures" / "make_legacy_dbs.py"
MESSAGES = 2000
TOKEN = "hive-import-token"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("legacy")
    subprocess.run([sys.executable, str(GENERATOR), str(folder), "--tasks", "1", "--messages", str(MESSAGES)],
                   check=True, capture_output=True)
    return folder / "hivemind.db"


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE hive_messages, hive_topics, hive_memory, hive_agents, hive_imports, hive_import_rows, "
                     "mc_tasks, mc_imports, mc_import_rows CASCADE")
    return {"ALAI_DATABASE_URL": database_url}


def count(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_dry_run_then_import_then_again_then_serve(sample, env, database_url, serve):
    dry = run_cli("admin", "import", str(sample), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was written" in dry.stdout and "hive_import_rows" in dry.stdout
    assert "topics:" in dry.stdout and "5 kept their name" in dry.stdout
    assert count(database_url, "hive_messages") == 0 and count(database_url, "hive_imports") == 0

    done = run_cli("admin", "import", str(sample), "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    with sqlite3.connect(sample) as db:
        source = {name: db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                  for name in ("messages", "memories", "agents")}
        legacy = db.execute("SELECT channel, sender, created_at FROM messages ORDER BY id").fetchall()
        key, value, agent = db.execute("SELECT key, value, agent FROM memories WHERE agent IS NOT NULL "
                                       "LIMIT 1").fetchone()
    written = {item["table"]: item["rows_written"] for item in report["tables"]}
    assert written == {**source, "hive_import_rows": sum(source.values())}
    assert report["already_imported"] is False and report["topic_map"]["alerts"] == "alerts"
    assert count(database_url, "hive_messages") == MESSAGES and count(database_url, "mc_tasks") == 0

    again = run_cli("admin", "import", str(sample), env=env)
    assert again.returncode == 0, again.stderr
    assert "already imported: nothing changed" in again.stdout
    assert count(database_url, "hive_messages") == MESSAGES

    server = serve(env={**env, "ALAI_ADMIN_TOKEN": TOKEN})
    server.wait_ready()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{server.url.replace('http://', 'ws://')}/v1/hive/stream?topic=>&after=0"
    received = []
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        while len(received) < MESSAGES:
            received.append(json.loads(ws.recv(timeout=20)))
    assert [(m["topic"], m["sender"], datetime.fromisoformat(m["created_at"])) for m in received] == [
        (channel, sender, datetime.fromisoformat(created).replace(tzinfo=UTC)) for channel, sender, created in legacy]
    with httpx.Client(base_url=server.url, headers=headers) as http:
        memory = http.get(f"/v1/hive/memory/{agent}/{key}")
        assert memory.status_code == 200 and memory.json()["value"] == value
        topics = {t["name"]: t["message_count"] for t in http.get("/v1/hive/topics").json()}
        assert sum(topics.values()) == MESSAGES
        assert len(http.get("/v1/hive/agents").json()) == source["agents"]


def test_progress_bar_on_a_terminal(sample, env, database_url):
    controller, terminal = pty.openpty()
    process = subprocess.Popen([*ALAI, "admin", "import", str(sample)], stdin=terminal, stdout=terminal,
                               stderr=terminal, env={**os.environ, **env, "COLUMNS": "100"})
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(60) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "write hive_messages" in text and "imported (" in text
    assert count(database_url, "hive_messages") == MESSAGES


def test_kind_can_be_named_and_a_file_of_both_is_refused(sample, env, database_url, tmp_path):
    both = tmp_path / "both.db"
    both.write_bytes(sample.read_bytes())
    with sqlite3.connect(both) as db:
        db.execute("CREATE TABLE tasks (id TEXT PRIMARY KEY, title TEXT, status TEXT)")
        db.execute("INSERT INTO tasks VALUES ('MC-1', 'a task', 'todo')")
    db.close()
    refused = run_cli("admin", "import", str(both), env=env)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "--kind mc and with --kind hive" in lines[0], refused.stderr

    as_hive = run_cli("admin", "import", str(both), "--kind", "hive", "--json", env=env)
    assert as_hive.returncode == 0, as_hive.stderr
    assert "tasks" in " ".join(json.loads(as_hive.stdout)["warnings"])  # kept verbatim, not HiveMind data
    assert count(database_url, "hive_messages") == MESSAGES and count(database_url, "mc_tasks") == 0
    as_mc = run_cli("admin", "import", str(both), "--kind", "mc", "--json", env=env)
    assert as_mc.returncode == 0, as_mc.stderr
    assert count(database_url, "mc_tasks") == 1
