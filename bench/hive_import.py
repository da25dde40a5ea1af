#!/usr/bin/env python3
"""Import of the legacy HiveMind sample (hivemind.db, 50,000 messages).

The sample (tests/fixtures/make_legacy_dbs.py, its default size: 50,000 messages,
500 memories, 5 agents) is imported into a fresh, migrated database on an embedded
PostgreSQL (default settings, durable commits): the whole `import_legacy` (reading,
mapping, COPY of the messages, the memories and agents, the verbatim copy of every
row, the topics' counters) plus the commit. Rounds are medians, each on a new
database.

Also shown (not part of the figure): the same import by the real CLI, process start
included; and a second run of the same file (`already_imported`, nothing written).

    python bench/hive_import.py [--rounds 3] [--messages 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GENERATOR = ROOT / "tests" / "fixtures" / "make_legacy_dbs.py"


def timed_import(url: str, path: Path) -> tuple[float, object]:
    import psycopg

    from alai.server.hive import importer

    async def run():
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            started = time.perf_counter()
            async with conn.transaction():
                report = await importer.import_legacy(conn, path=path, mapping=None, dry_run=False, actor="bench")
            return time.perf_counter() - started, report

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=50000)
    args = parser.parse_args()

    from alai.server.db import migrations
    from alai.server.db.embedded import EmbeddedPostgres
    from tests.support import databases

    with tempfile.TemporaryDirectory(prefix="alai-bench-hive-") as tmp:
        tmp_path = Path(tmp)
        subprocess.run([sys.executable, str(GENERATOR), str(tmp_path / "legacy"), "--tasks", "1",
                        "--messages", str(args.messages)], check=True, capture_output=True)
        sample = tmp_path / "legacy" / "hivemind.db"
        pg = EmbeddedPostgres(tmp_path / "data")
        admin_url = pg.start()
        samples: dict[str, list[float]] = {"import": [], "again": [], "cli": []}
        report = None
        try:
            def fresh(prefix: str) -> tuple[str, str]:
                name = databases.unique_name(prefix)
                databases.create_database(admin_url, name)
                url = databases.with_database(admin_url, name)
                migrations.migrate(url)
                return name, url

            for round_number in range(args.rounds):
                name, url = fresh("bench_hive")
                elapsed, report = timed_import(url, sample)
                samples["import"].append(elapsed)
                elapsed, again = timed_import(url, sample)
                assert again.already_imported  # type: ignore[attr-defined]
                samples["again"].append(elapsed)
                databases.drop_database(admin_url, name)
                print(f"round {round_number + 1}: import {samples['import'][-1]:5.2f} s, "
                      f"second run {samples['again'][-1]:5.2f} s", flush=True)

            name, url = fresh("bench_hive_cli")
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
    messages = rows["messages"].rows_written
    print(f"sample: {messages:,} messages, {rows['memories'].rows_written:,} memories, "
          f"{rows['agents'].rows_written:,} agents, {rows['hive_import_rows'].rows_written:,} verbatim rows; "
          f"{os.cpu_count()} cores")
    print(f"alai admin import (CLI process, start included): {median['cli']:.2f} s; "
          f"second run of the same file (nothing written): {median['again']:.2f} s")
    print(f"hive import of {messages:,} messages: {median['import']:.2f} s "
          f"(median of {args.rounds} rounds, commit included)")


if __name__ == "__main__":
    main()
