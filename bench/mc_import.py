#!/usr/bin/env python3
"""Import of the legacy Mission Control sample, side by side with pgloader.

The 8,378-task sample (tests/fixtures/make_legacy_dbs.py, its default size) is
imported into a fresh, migrated database on an embedded PostgreSQL: the whole
`import_legacy` (reading, mapping, the verbatim copy of every row) plus the commit.
pgloader (Debian package) loads the same file into a scratch database on the same
server, same run; its figure is its process's wall time. Rounds alternate between
the two; the figures are medians. Target: the import faster than pgloader.

Also shown, not part of the figure:
- the same import by the real CLI, process start included;
- the search index catch-up: the import leaves full-text vectors to the control
  plane's background job (searches are correct meanwhile); how long that job's
  batches take to index everything the import wrote, after the commit;
- PostgreSQL's share alone: the rows the import wrote (tasks, comments, history,
  verbatim rows), copied out as COPY text and COPYed again into a fresh, migrated
  database in one transaction, with nothing left to compute on the client. No import
  that writes these rows can be faster than this on the machine.

    python bench/mc_import.py [--rounds 3] [--tasks 8378]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GENERATOR = ROOT / "tests" / "fixtures" / "make_legacy_dbs.py"
STATUSES = ["todo", "in_progress", "blocked", "review", "done", "cancelled"]
CLOSED = ["done", "cancelled"]


def ensure_pgloader() -> str:
    found = shutil.which("pgloader")
    if found:
        return found
    print("pgloader missing: apt-get install -y pgloader", flush=True)
    subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgloader",
                   shell=True, check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("pgloader")
    if not found:
        raise SystemExit("pgloader could not be installed")
    return found


def timed_import(url: str, path: Path, *, options: str = "") -> tuple[float, object]:
    import psycopg

    from alai.server.mc import importer

    async def run():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True, options=options) as conn:
            started = time.perf_counter()
            async with conn.transaction():
                report = await importer.import_legacy(conn, path=path, mapping=None, dry_run=False, actor="bench",
                                                      statuses=STATUSES, closed_statuses=CLOSED)
            return time.perf_counter() - started, report

    return asyncio.run(run())


def index_search(url: str) -> float:
    """The background job's work after an import: every pending vector, in its batches."""
    import psycopg

    from alai.server.mc import service

    async def run() -> float:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            while await service.index_pending_search(conn):
                pass
            return time.perf_counter() - started

    return asyncio.run(run())


FLOOR_TABLES = {
    "mc_tasks": "id, title, description, status, priority, assignee, project, labels, parent_id, due_date, "
                "metadata, created_at, updated_at, closed_at, archived_at, created_by",
    "mc_comments": "id, task_id, author, body, created_at",
    "mc_history": "id, task_id, field, old_value, new_value, changed_by, changed_at, source",
    "mc_import_rows": "source_sha256, source_table, source_key, data, target_id, problems",
}


def copied_out(url: str) -> dict[str, bytes]:
    """What an import wrote, as COPY text per table."""
    import psycopg

    payloads = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table, columns in FLOOR_TABLES.items():
            with conn.cursor().copy(f"COPY {table} ({columns}) TO STDOUT") as copy:
                payloads[table] = b"".join(bytes(block) for block in copy)
    return payloads


def timed_copy_in(url: str, payloads: dict[str, bytes]) -> float:
    """The same rows COPYed into a fresh database, as the import does (search vectors deferred)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        with conn.transaction():
            conn.execute("SELECT set_config('alai.mc_defer_search', 'on', true)")
            for table, columns in FLOOR_TABLES.items():
                data = payloads[table]
                with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for offset in range(0, len(data), 1 << 20):
                        copy.write(data[offset:offset + (1 << 20)])
        return time.perf_counter() - started


def pgloader_target(pg, database: str) -> str:
    return f"postgresql://postgres@unix:{pg.socket_dir}:{pg.port}/{database}"


def timed_pgloader(pgloader: str, path: Path, target: str, log: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run([pgloader, str(path), target], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    log.write_text(result.stdout + result.stderr)
    if result.returncode != 0 or "Total import time" not in result.stdout + result.stderr:
        raise RuntimeError(f"pgloader failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=8378)
    args = parser.parse_args()
    pgloader = ensure_pgloader()

    from alai.server.db import migrations
    from alai.server.db.embedded import EmbeddedPostgres
    from tests.support import databases

    with tempfile.TemporaryDirectory(prefix="alai-bench-mc-") as tmp:
        tmp_path = Path(tmp)
        subprocess.run([sys.executable, str(GENERATOR), str(tmp_path / "legacy"), "--tasks", str(args.tasks),
                        "--messages", "1"], check=True, capture_output=True)
        sample = tmp_path / "legacy" / "mission-control.db"
        # pgloader reads the file as another user may: keep it readable.
        os.chmod(tmp_path, 0o755)
        pg = EmbeddedPostgres(tmp_path / "data")
        admin_url = pg.start()
        samples: dict[str, list[float]] = {"alai": [], "pgloader": [], "cli": [], "index": [], "floor": []}
        payloads: dict[str, bytes] = {}
        fallback_note = ""
        report = None
        try:
            def fresh(prefix: str, migrate: bool = True) -> tuple[str, str]:
                name = databases.unique_name(prefix)
                databases.create_database(admin_url, name)
                url = databases.with_database(admin_url, name)
                if migrate:
                    migrations.migrate(url)
                return name, url

            for round_number in range(args.rounds):
                order = ("alai", "pgloader") if round_number % 2 == 0 else ("pgloader", "alai")
                for which in order:
                    if which == "alai":
                        name, url = fresh("bench_mc")
                        elapsed, report = timed_import(url, sample)
                        samples["alai"].append(elapsed)
                        payloads = payloads or copied_out(url)
                        samples["index"].append(index_search(url))
                    else:
                        name, url = fresh("bench_pgloader", migrate=False)
                        target = pgloader_target(pg, name)
                        try:
                            elapsed = timed_pgloader(pgloader, sample, target, tmp_path / "pgloader.log")
                        except RuntimeError as error:
                            if round_number or fallback_note:
                                raise
                            # The Unix-socket form failed: the machine's PostgreSQL, if any, is the fallback.
                            print(f"pgloader over the socket failed ({str(error).splitlines()[0]}); "
                                  "trying postgresql://postgres@127.0.0.1:5432", flush=True)
                            pg_loader_url = "postgresql://postgres@127.0.0.1:5432/postgres"
                            scratch = databases.unique_name("bench_pgloader")
                            databases.create_database(pg_loader_url, scratch)
                            fallback_note = " (pgloader on the machine's PostgreSQL at 127.0.0.1:5432, not the same server)"
                            try:
                                elapsed = timed_pgloader(pgloader, sample,
                                                         f"postgresql://postgres@127.0.0.1:5432/{scratch}",
                                                         tmp_path / "pgloader.log")
                            finally:
                                databases.drop_database(pg_loader_url, scratch)
                        samples["pgloader"].append(elapsed)
                    databases.drop_database(admin_url, name)
                    print(f"round {round_number + 1} {which:<9} {samples[which][-1]:6.2f} s", flush=True)

                name, url = fresh("bench_floor")
                samples["floor"].append(timed_copy_in(url, payloads))
                databases.drop_database(admin_url, name)

                name, url = fresh("bench_cli")
                started = time.perf_counter()
                cli = subprocess.run([sys.executable, "-m", "alai", "admin", "import", str(sample), "--json"],
                                     env={**os.environ, "ALAI_DATABASE_URL": url}, capture_output=True, text=True)
                samples["cli"].append(time.perf_counter() - started)
                if cli.returncode != 0:
                    raise SystemExit(f"alai admin import failed: {cli.stderr}")
                databases.drop_database(admin_url, name)

        finally:
            pg.stop()

    median = {name: statistics.median(values) for name, values in samples.items()}
    rows = {item.table: item for item in report.tables}  # type: ignore[union-attr]
    tasks, comments, history = rows["tasks"].rows_written, rows["task_comments"].rows_written, \
        rows["task_history"].rows_written
    print(f"sample: {tasks:,} tasks, {comments:,} comments, {history:,} history entries, "
          f"{rows['mc_import_rows'].rows_written:,} verbatim rows; {os.cpu_count()} cores")
    print(f"alai admin import (CLI process, start included): {median['cli']:.2f} s")
    print(f"search index catch-up after the commit (background job, batches of 500): {median['index']:.2f} s")
    print(f"PostgreSQL's share alone (the same rows COPYed from prepared payloads, one transaction): "
          f"{median['floor']:.2f} s")
    ratio = median["pgloader"] / median["alai"]
    verdict = "faster" if ratio > 1 else "slower"
    print(f"mc import of {tasks:,} tasks: alai {median['alai']:.2f} s (transformation included) vs pgloader "
          f"{median['pgloader']:.2f} s{fallback_note}; alai is {max(ratio, 1 / ratio):.2f}x {verdict} "
          f"(median of {args.rounds} rounds)")


if __name__ == "__main__":
    main()
