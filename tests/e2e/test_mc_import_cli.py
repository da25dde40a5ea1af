"""`alai admin import` end to end: the real CLI on the generated sample, against a migrated database."""

from __future__ import annotations

import json
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.processes import ALAI, run_cli

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "tests" / "fixtures" / "make_legacy_dbs.py"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("legacy")
    subprocess.run([sys.executable, str(GENERATOR), str(folder), "--tasks", "300", "--messages", "1"], check=True,
                   capture_output=True)
    return folder / "mission-control.db"


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE mc_tasks, mc_comments, mc_history, mc_imports, mc_import_rows CASCADE")
    return {"ALAI_DATABASE_URL": database_url}


def task_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM mc_tasks").fetchone()[0]


def test_dry_run_then_import_then_again(sample, env, database_url):
    dry = run_cli("admin", "import", str(sample), "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was written" in dry.stdout and "task_comments" in dry.stdout
    assert task_count(database_url) == 0

    done = run_cli("admin", "import", str(sample), "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    with sqlite3.connect(sample) as db:
        source = {name: db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                  for name in ("tasks", "task_comments", "task_history")}
    written = {item["table"]: item["rows_written"] for item in report["tables"]}
    assert written == {**source, "mc_import_rows": sum(source.values())}
    assert report["already_imported"] is False and report["status_map"]["in_progress"] == "in_progress"
    assert task_count(database_url) == 300

    again = run_cli("admin", "import", str(sample), env=env)
    assert again.returncode == 0, again.stderr
    assert "already imported: nothing changed" in again.stdout
    assert task_count(database_url) == 300


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
    assert "write mc_tasks" in text and "imported (" in text
    assert task_count(database_url) == 300


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("not-sqlite", "is not an SQLite database"),
    ("bad-yaml", "is not valid YAML"),
    ("bad-mapping", "is not a workflow status"),
])
def test_mistakes_are_one_line_errors(sample, env, tmp_path, case, message):
    args = [str(tmp_path / "nope.db")]
    if case == "not-sqlite":
        (tmp_path / "text.db").write_text("just text")
        args = [str(tmp_path / "text.db")]
    elif case in ("bad-yaml", "bad-mapping"):
        mapping = tmp_path / "map.yaml"
        mapping.write_text("statuses: {open: [unclosed" if case == "bad-yaml" else "statuses: {open: nope}\n")
        args = [str(sample), "--map", str(mapping)]
    result = run_cli("admin", "import", *args, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
