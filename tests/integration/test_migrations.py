"""Migrations replayed on an empty database, raced by replicas, and guarded against edits."""

import os
import threading
from pathlib import Path

import psycopg
import pytest

from alai.server.db import migrations
from tests.integration.schema_snapshot import describe

EXPECTED_SCHEMA = Path(__file__).with_name("schema.expected")


def test_replay_on_an_empty_database_gives_the_expected_schema(empty_database_url):
    applied = migrations.migrate(empty_database_url)
    assert applied == [m.key for m in migrations.discover()]
    actual = describe(empty_database_url)
    if os.environ.get("ALAI_UPDATE_SCHEMA"):
        EXPECTED_SCHEMA.write_text(actual)
    assert actual == EXPECTED_SCHEMA.read_text(), (
        "the migrated schema differs from tests/integration/schema.expected; if the change is intended, "
        "rerun with ALAI_UPDATE_SCHEMA=1 and review the diff"
    )


def test_second_run_is_a_no_op(empty_database_url):
    migrations.migrate(empty_database_url)
    assert migrations.migrate(empty_database_url) == []
    plan = migrations.status(empty_database_url)
    assert plan.pending == [] and plan.changed == [] and plan.unknown == []


def test_replicas_starting_together_apply_each_migration_once(empty_database_url):
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def replica() -> None:
        try:
            barrier.wait()
            results.append(migrations.migrate(empty_database_url))
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    everything = [m.key for m in migrations.discover()]
    assert sorted(key for result in results for key in result) == sorted(everything)
    with psycopg.connect(empty_database_url) as conn:
        count = conn.execute("SELECT count(*) FROM alai_migrations").fetchone()[0]
    assert count == len(everything)


def test_status_lists_pending_before_and_none_after(empty_database_url):
    before = migrations.status(empty_database_url)
    assert [m.key for m in before.pending] == [m.key for m in migrations.discover()]
    assert before.applied == []
    migrations.migrate(empty_database_url)
    after = migrations.status(empty_database_url)
    assert after.pending == [] and len(after.applied) == len(before.pending)


def test_an_edited_migration_is_refused(empty_database_url):
    migrations.migrate(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("UPDATE alai_migrations SET checksum = 'edited' WHERE module = 'ops' AND version = 1")
    assert migrations.status(empty_database_url).changed == ["ops/0001_instances"]
    with pytest.raises(migrations.MigrationError, match="edited afterwards: ops/0001_instances"):
        migrations.migrate(empty_database_url)


def test_migrations_applied_by_a_newer_build_are_reported_not_fatal(empty_database_url):
    migrations.migrate(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO alai_migrations (module, version, name, checksum, duration_ms) "
                     "VALUES ('ops', 999, 'from_the_future', 'x', 0)")
    plan = migrations.status(empty_database_url)
    assert plan.unknown == ["ops/0999_from_the_future"]
    assert migrations.migrate(empty_database_url) == []


def test_a_failing_migration_leaves_nothing_half_applied(empty_database_url):
    broken = migrations.Migration("ops", 2, "broken", "CREATE TABLE half_done (id int); SELECT 1/0;")
    with pytest.raises(migrations.MigrationError, match="ops/0002_broken failed: division by zero"):
        migrations.migrate(empty_database_url, known=[*migrations.discover(), broken])
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone()[0] is None
        versions = [row[0] for row in conn.execute("SELECT version FROM alai_migrations WHERE module = 'ops'")]
    assert versions == [1]
