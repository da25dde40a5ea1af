"""Import of a legacy hivemind.db into hive_messages, hive_memory and hive_agents.

Contract (as the Mission Control import's, `alai.server.mc.importer`):
- The caller owns the transaction: `import_legacy` runs inside one and never commits,
  so a failure leaves the database as it was. Imports are serialised by a lock on
  hive_imports; publishers and readers go on, except that publishes to a topic the
  import writes to wait for its commit (it holds the topic's row, as a publish does).
- Every row of every table of the file lands in hive_import_rows verbatim (jsonb),
  with the problems met while mapping it and what it became (message id,
  "namespace/key", agent name). Rows that cannot be mapped cleanly are imported anyway,
  their problems recorded.
- Messages are written in legacy order, in the one transaction, so their ids and
  stream positions follow that order and a subscriber from the start sees them in it;
  they keep their time (created_at). The topics' message_count and last_message_at
  take them into account. One NOTIFY at commit wakes the subscribers of every replica.
- Idempotent: a file whose sha256 is in hive_imports is not imported again
  (`already_imported=True`, nothing written). Of another file (a later export of the
  same database), rows already imported — same table, key and content (row_hash) —
  are not written again; memories and agents that exist already are left as they are.
- Dry run: the same writes in a savepoint that is always rolled back.
- Imported memories do not publish change events (hive.memory.*): the stream is for
  live changes.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from alai.server import gc_pause
from alai.server.hive import import_source, import_transform, service
from alai.server.hive.import_transform import MESSAGE_COLUMNS, Plan
from alai.server.mc import import_source as mc_source
from alai.server.mc import importer as mc_importer
from alai.server.problems import ProblemError
from alai.wire.hive import Agent, HiveImportReport
from alai.wire.mc import ImportTableReport

Progress = Callable[[str, int, int], None]
IMPORT_ROW_COLUMNS = ("source_sha256", "source_table", "source_key", "row_hash", "data", "target_id", "problems")


@gc_pause.pausing
async def import_legacy(
    conn: psycopg.AsyncConnection,
    *,
    path: Path,
    mapping: dict[str, Any] | None,
    dry_run: bool,
    actor: str,
    progress: Progress | None = None,
    source_name: str | None = None,
) -> HiveImportReport:
    """Imports the hivemind.db at `path`; see the module docstring for the contract."""
    started = time.perf_counter()
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("import_legacy must run inside the caller's transaction (async with conn.transaction())")
    sha256 = await asyncio.to_thread(mc_importer.file_sha256, path)
    tables = await asyncio.to_thread(mc_source.read_tables, path, progress)
    detected = import_source.detect(tables, mapping)
    plan = await asyncio.to_thread(import_transform.transform, tables, detected)
    if Path(f"{path}-wal").exists():
        plan.notes.insert(0, f"{path.name}-wal lies beside the file: the old HiveMind may still be running; "
                             "stop it first, or messages it writes now are missed")

    cur = conn.cursor(row_factory=tuple_row)
    # One import at a time (the check of what was imported before stays true until
    # commit); nobody else takes this lock, so publishers and readers are not held up.
    await cur.execute("LOCK TABLE hive_imports IN SHARE ROW EXCLUSIVE MODE")
    await cur.execute("SELECT started_at, imported_by FROM hive_imports WHERE source_sha256 = %s ORDER BY id LIMIT 1",
                      (sha256,))
    previous = await cur.fetchone()
    written_rows = 0
    if previous is not None:
        for role in ("messages", "memories", "agents"):
            for item in getattr(plan, role):
                item.write = False
        plan.notes.insert(0, f"this file (sha256 {sha256[:12]}…) was imported on {previous[0]:%Y-%m-%d %H:%M} UTC "
                             f"by {previous[1]}; nothing was changed")
    else:
        await cur.execute("SELECT EXISTS (SELECT 1 FROM hive_imports)")
        if (await cur.fetchone())[0]:
            await asyncio.to_thread(import_transform.encode_source_rows, plan)
            await _skip_seen_rows(cur, plan)
            encoding = None
        else:  # nothing to compare with: the verbatim copies are made while the messages are written
            encoding = asyncio.create_task(asyncio.to_thread(import_transform.encode_source_rows, plan))
        stage = ["the topics"]  # what was being written, for the error message
        try:
            async with conn.transaction(force_rollback=dry_run):
                await _write(cur, plan, sha256, actor, progress, stage, encoding)
                written_rows = sum(1 for _ in plan.source_rows)
        except mc_importer.DATA_ERRORS as error:
            detail = error.diag.message_primary or str(error)
            raise ProblemError(422, f"the import failed while writing {stage[0]}: {detail}; nothing was written",
                               slug="hive-import-failed") from error
        finally:
            if encoding is not None and not encoding.done():  # never left running behind a failure
                await asyncio.gather(encoding, return_exceptions=True)
    report = _report(plan, source=source_name or path.name, sha256=sha256, dry_run=dry_run,
                     already_imported=previous is not None, written_rows=written_rows,
                     duration=time.perf_counter() - started)
    if previous is None and not dry_run:
        await cur.execute("INSERT INTO hive_imports (source_name, source_sha256, imported_by, report) "
                          "VALUES (%s, %s, %s, %s)", (report.source, sha256, actor, report.model_dump_json()))
        if plan.written("messages"):
            # Delivered at commit (and dropped on rollback): one wake-up for the whole import.
            await cur.execute(f"NOTIFY {service.NOTIFY_CHANNEL}")
    report.duration_seconds = round(time.perf_counter() - started, 3)
    return report


async def _skip_seen_rows(cur: psycopg.AsyncCursor, plan: Plan) -> None:
    """Rows another file brought in already (same table, key and content) are not written again."""
    rows = {row.row_hash: row for row in plan.source_rows}
    # A hash join over the whole table: no index to keep up on every import, and only
    # imports after the first one ask.
    await cur.execute("SELECT DISTINCT ON (r.row_hash) r.row_hash, r.target_id FROM hive_import_rows r "
                      "JOIN unnest(%s::text[]) AS f(row_hash) ON f.row_hash = r.row_hash "
                      "ORDER BY r.row_hash, r.target_id IS NULL", (list(rows),))
    for row_hash, target_id in await cur.fetchall():
        rows[row_hash].seen_before = True
        rows[row_hash].target_id = target_id
    seen: Counter = Counter()
    for role in ("messages", "memories", "agents"):
        for item in getattr(plan, role):
            if item.source.seen_before:
                item.write = False
                seen[item.source.table] += 1
    for table, count in seen.items():
        plan.notes.append(f"{count} row(s) of {table!r} were imported before, from another file, and were not "
                          "written again")


async def _write(cur: psycopg.AsyncCursor, plan: Plan, sha256: str, actor: str, progress: Progress | None,
                 stage: list[str], encoding: asyncio.Task | None) -> None:
    """Writes the plan; `stage[0]` names what is being written. `encoding` (the verbatim
    copies being made in a thread) is awaited before they are written, or on a failure."""
    try:
        await _write_targets(cur, plan, actor, progress, stage)
    except BaseException:
        if encoding is not None:
            await asyncio.gather(encoding, return_exceptions=True)
        raise
    if encoding is not None:
        await encoding
    stage[0] = "the verbatim source rows"
    rows = list(plan.source_rows)
    await mc_importer.copy_rows(cur, "hive_import_rows", IMPORT_ROW_COLUMNS, (
        (sha256, row.table, row.key, row.row_hash, row.data, row.target_id, row.problems) for row in rows),
        len(rows), progress)


async def _write_targets(cur: psycopg.AsyncCursor, plan: Plan, actor: str, progress: Progress | None,
                         stage: list[str]) -> None:
    messages = [message for message in plan.messages if message.write]
    if messages:
        # The topics' locks before the first write, as in a publish (service's docstring).
        await service.lock_topics(cur.connection, sorted({m.topic for m in messages}))
        await _upsert_topics(cur, plan, messages, actor)
        stage[0] = "the messages"
        # The identity takes its values row by row, in the order of the COPY (the legacy
        # order); this transaction's messages (tx) are then read back to learn them.
        await cur.execute("SELECT coalesce(max(id), 0) FROM hive_messages WHERE tx = pg_current_xact_id()")
        before = (await cur.fetchone())[0]
        await mc_importer.copy_rows(cur, "hive_messages", MESSAGE_COLUMNS, (
            (m.topic, m.sender, m.key, m.headers, m.content_type, m.payload, m.created_at) for m in messages),
            len(messages), progress)
        ids = await _ids_written(cur, after=before, count=len(messages))
        for message, new_id in zip(messages, ids, strict=True):
            message.id = new_id
            message.source.target_id = str(new_id)
    stage[0] = "the memories"
    await _insert_memories(cur, plan)
    stage[0] = "the agents"
    await _insert_agents(cur, plan, actor)


async def _ids_written(cur: psycopg.AsyncCursor, *, after: int, count: int) -> list[int]:
    """The ids this transaction's messages took (after `after`), in order."""
    await cur.execute("SELECT min(id), max(id), count(*) FROM hive_messages WHERE tx = pg_current_xact_id() "
                      "AND id > %s", (after,))
    low, high, found = await cur.fetchone()
    if found == count and high - low + 1 == count:  # no publisher took an id in between: no need to list them
        return list(range(low, high + 1))
    await cur.execute("SELECT id FROM hive_messages WHERE tx = pg_current_xact_id() AND id > %s ORDER BY id",
                      (after,))
    return [row[0] for row in await cur.fetchall()]


async def _upsert_topics(cur: psycopg.AsyncCursor, plan: Plan, messages: list, actor: str) -> None:
    """Creates the topics (created_at: their oldest message) or adds to their counts;
    last_message_at is the newest message, imported or not."""
    counts: Counter = Counter()
    first: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for message in messages:
        topic, moment = message.topic, message.created_at
        counts[topic] += 1
        if topic not in first or moment < first[topic]:
            first[topic] = moment
        if topic not in last or moment > last[topic]:
            last[topic] = moment
    names = sorted(counts)
    await cur.execute("SELECT name, retention_max_age, retention_max_count FROM hive_topics WHERE name = ANY(%s) "
                      "AND (retention_max_age IS NOT NULL OR retention_max_count IS NOT NULL)", (names,))
    for name, max_age, max_count in await cur.fetchall():
        limits = [f"messages for {int(max_age.total_seconds()):,} s" if max_age else "",
                  f"at most {max_count:,} messages" if max_count else ""]
        plan.notes.append(f"topic {name!r} keeps {' and '.join(filter(None, limits))}: imported messages "
                          "beyond that are pruned within a minute")
    await cur.execute(
        """
        INSERT INTO hive_topics (name, created_by, created_at, message_count, last_message_at)
        SELECT t.name, %s, t.first_at, t.n, t.last_at
        FROM unnest(%s::text[], %s::bigint[], %s::timestamptz[], %s::timestamptz[]) AS t(name, n, first_at, last_at)
        ORDER BY t.name
        ON CONFLICT (name) DO UPDATE
            SET message_count = hive_topics.message_count + EXCLUDED.message_count,
                last_message_at = greatest(hive_topics.last_message_at, EXCLUDED.last_message_at)
        """,
        (actor, names, [counts[name] for name in names], [first[name] for name in names],
         [last[name] for name in names]))


async def _insert_memories(cur: psycopg.AsyncCursor, plan: Plan) -> None:
    memories = [memory for memory in plan.memories if memory.write]
    if not memories:
        return
    await cur.execute(
        """
        INSERT INTO hive_memory (namespace, key, value, updated_at, updated_by)
        SELECT * FROM unnest(%s::text[], %s::text[], %s::jsonb[], %s::timestamptz[], %s::text[])
        ON CONFLICT (namespace, key) DO NOTHING
        RETURNING namespace, key
        """,
        ([m.namespace for m in memories], [m.key for m in memories], [m.value for m in memories],
         [m.updated_at for m in memories], [m.updated_by for m in memories]))
    inserted = set(await cur.fetchall())
    kept = []
    for memory in memories:
        if (memory.namespace, memory.key) not in inserted:
            memory.write = False
            memory.source.problems.append(f"memory {memory.namespace}/{memory.key} exists already; left unchanged")
            kept.append(f"{memory.namespace}/{memory.key}")
    if kept:
        plan.notes.append(f"{len(kept)} memory value(s) existed already and were left unchanged: "
                          f"{', '.join(kept[:10])}{' …' if len(kept) > 10 else ''}")


async def _insert_agents(cur: psycopg.AsyncCursor, plan: Plan, actor: str) -> None:
    agents = [agent for agent in plan.agents if agent.write]
    if not agents:
        return
    await cur.execute(
        """
        INSERT INTO hive_agents (name, status, last_seen, capabilities, metadata, created_by)
        SELECT t.*, %s FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::jsonb[], %s::jsonb[]) AS t
        ON CONFLICT (name) DO NOTHING
        RETURNING name
        """,
        (actor, [a.name for a in agents], [a.status for a in agents], [a.last_seen for a in agents],
         [a.capabilities for a in agents], [a.metadata for a in agents]))
    inserted = {row[0] for row in await cur.fetchall()}
    kept = []
    for agent in agents:
        if agent.name not in inserted:
            agent.write = False
            agent.source.problems.append(f"agent {agent.name!r} exists already; left unchanged")
            kept.append(agent.name)
    if kept:
        plan.notes.append(f"{len(kept)} agent(s) existed already and were left unchanged: "
                          f"{', '.join(kept[:10])}{' …' if len(kept) > 10 else ''}")


def _report(plan: Plan, *, source: str, sha256: str, dry_run: bool, already_imported: bool, written_rows: int,
            duration: float) -> HiveImportReport:
    written: Counter = Counter()
    for role in ("messages", "memories", "agents"):
        name = plan.detected.tables[role]
        if name:
            written[name] = plan.written(role)
    tables = [ImportTableReport(table=name, rows_read=len(rows), rows_written=written[name],
                                rows_with_problems=sum(1 for row in rows if row.problems))
              for name, rows in plan.rows_of_table.items()]
    source_rows = list(plan.source_rows)
    tables.append(ImportTableReport(table="hive_import_rows", rows_read=len(source_rows), rows_written=written_rows,
                                    rows_with_problems=sum(1 for row in source_rows if row.problems)))
    warnings = [*plan.notes, *mc_importer.row_warnings(source_rows, "hive_import_rows")]
    return HiveImportReport(
        source=source, source_sha256=sha256, dry_run=dry_run, already_imported=already_imported, tables=tables,
        topic_map=plan.topic_map, namespace_map=plan.namespace_map, column_map=plan.column_map, warnings=warnings,
        duration_seconds=round(duration, 3),
    )


async def list_agents(conn: psycopg.AsyncConnection) -> list[Agent]:
    """The agents' registry (for now filled only by the import)."""
    rows = await (await conn.execute(
        "SELECT name, status, last_seen, capabilities, metadata, created_at, created_by FROM hive_agents "
        "ORDER BY name")).fetchall()
    return [Agent(**row) for row in rows]
