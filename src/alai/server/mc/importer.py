"""Import of a legacy Mission Control SQLite file into mc_tasks, mc_comments, mc_history.

Contract:
- The caller owns the transaction: `import_legacy` must run inside one
  (`async with conn.transaction():`) and never commits, so a failure leaves the
  database as it was. Imports are serialised by a lock on mc_tasks that lets readers on.
- Every row of every table of the file lands in mc_import_rows verbatim (jsonb), with
  the problems met while mapping it and the id it became (task id, comment id …).
  Rows that cannot be mapped cleanly are imported anyway, their problems recorded.
- Idempotent: a file whose sha256 is in mc_imports is not imported again
  (`already_imported=True`, nothing written). Another file of the same tracker keeps
  tasks that already exist as they are and skips comments and history entries that
  are already present.
- Dry run: the same writes in a savepoint that is always rolled back, so the report's
  counts are those of a real run and the database's constraints were checked.
- Report: one ImportTableReport per source table (rows written = rows that became
  tasks, comments or history entries), and a last one, `mc_import_rows`, for the
  verbatim copies.
- Data is written with COPY; comment and history ids are taken from their identity
  sequences beforehand, so that mc_import_rows can name them.
- Full-text search vectors are left NULL (`alai.mc_defer_search` for the duration of
  the writes, migration 0002): GIN insertion of thousands of vectors costs seconds,
  more than everything else together. The control plane's background job fills them
  in small batches afterwards, and until then searches compute the vector of such
  rows on the fly, so results are the same (bench/mc_import.py measures both times).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors
from psycopg.rows import tuple_row

from alai.server import gc_pause
from alai.server.mc import import_source, import_transform
from alai.server.mc import import_values as values
from alai.server.mc.import_children import SourceRow, canonical_json
from alai.server.mc.import_source import SourceTable
from alai.server.mc.import_transform import COMMENT_COLUMNS, HISTORY_COLUMNS, TASK_COLUMNS, Plan
from alai.server.problems import ProblemError
from alai.wire.mc import ImportReport, ImportTableReport

Progress = Callable[[str, int, int], None]
MAX_ROW_WARNINGS = 200
PROGRESS_EVERY = 2000
COPY_BLOCK = 64 * 1024  # characters of COPY text per write
SEQUENCE_ID = re.compile(r"^MC-(\d{1,18})$")
PARENT_FOREIGN_KEY = "mc_tasks_parent_id_fkey"
# Errors that mean "this data cannot be written", as opposed to a broken connection.
DATA_ERRORS = (errors.IntegrityError, errors.DataError, errors.RaiseException)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@gc_pause.pausing
async def import_legacy(
    conn: psycopg.AsyncConnection,
    *,
    path: Path,
    mapping: dict[str, Any] | None,
    dry_run: bool,
    actor: str,
    statuses: list[str],
    closed_statuses: list[str],
    progress: Progress | None = None,
    source_name: str | None = None,
) -> ImportReport:
    """Imports the SQLite file at `path`; see the module docstring for the contract."""
    started = time.perf_counter()
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("import_legacy must run inside the caller's transaction (async with conn.transaction())")
    if not statuses:
        raise ProblemError(422, "the workflow has no statuses (ALAI_MC_STATUSES)")
    # hashlib lets go of the GIL: the file is hashed while it is read.
    sha256, tables = await asyncio.gather(asyncio.to_thread(file_sha256, path),
                                          asyncio.to_thread(import_source.read_tables, path, progress))
    detected = import_source.detect(tables, mapping, statuses)
    import_source.check_mapped_columns(detected, tables)
    plan = await asyncio.to_thread(import_transform.transform_tasks, tables, detected, statuses=statuses,
                                   closed_statuses=closed_statuses)

    if Path(f"{path}-wal").exists():
        plan.notes.insert(0, f"{path.name}-wal lies beside the file: the old Mission Control may still be running; "
                             "stop it first, or rows it writes now are missed")
    cur = conn.cursor(row_factory=tuple_row)
    # One import at a time, and no task created under our feet between the check of
    # which ids exist and the COPY; readers are not blocked.
    await cur.execute("LOCK TABLE mc_tasks IN SHARE ROW EXCLUSIVE MODE")
    await cur.execute("SELECT started_at, imported_by FROM mc_imports WHERE source_sha256 = %s ORDER BY id LIMIT 1",
                      (sha256,))
    previous = await cur.fetchone()
    file_ids = plan.task_ids
    existing = await _existing_task_ids(cur, file_ids | plan.parent_refs())
    if previous is not None:
        # Report as the first run did (its own rows do not count as "already there"), write nothing.
        plan.resolve_tasks(existing - file_ids)
        await asyncio.to_thread(_map_everything, plan)
        outside = await _existing_task_ids(cur, plan.child_refs() - file_ids)
        plan.resolve_children(file_ids | outside, Counter(), Counter())
        for item in (*plan.tasks, *plan.comments, *plan.history):
            item.write = False
        plan.notes.insert(0, f"this file (sha256 {sha256[:12]}…) was imported on {previous[0]:%Y-%m-%d %H:%M} UTC "
                             f"by {previous[1]}; nothing was changed")
        written_rows = 0
    else:
        plan.resolve_tasks(existing)
        stage = ["the tasks"]  # what was being written, for the error message
        try:
            async with conn.transaction(force_rollback=dry_run):
                await cur.execute("SELECT set_config('alai.mc_defer_search', 'on', true)")
                try:
                    await _write(cur, plan, sha256, progress, stage, file_ids=file_ids, existing=existing)
                finally:
                    if not conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
                        await cur.execute("SELECT set_config('alai.mc_defer_search', 'off', true)")
                written_rows = len(plan.source_rows)
        except DATA_ERRORS as error:
            detail = error.diag.message_primary or str(error)
            raise ProblemError(422, f"the import failed while writing {stage[0]}: {detail}; nothing was written",
                               slug="mc-import-failed") from error
    report = _report(plan, source=source_name or path.name, sha256=sha256, dry_run=dry_run,
                     already_imported=previous is not None, written_rows=written_rows,
                     duration=time.perf_counter() - started)
    if previous is None and not dry_run:
        await cur.execute("INSERT INTO mc_imports (source_name, source_sha256, imported_by, report) "
                          "VALUES (%s, %s, %s, %s)", (report.source, sha256, actor, report.model_dump_json()))
        await _advance_task_number(cur, file_ids)
    if previous is None and any(task.write for task in plan.tasks):
        report.warnings.insert(0, "full-text search vectors of the imported tasks are computed by the control plane "
                                  "(alai serve) in the background; searches find these tasks meanwhile")
    report.duration_seconds = round(time.perf_counter() - started, 3)
    return report


async def _resolve_children(cur: psycopg.AsyncCursor, plan: Plan, file_ids: set[str], existing: set[str]) -> None:
    # Ids of the file were looked up before its tasks were written; only others are asked for now.
    outside = await _existing_task_ids(cur, plan.child_refs() - file_ids - existing)
    comments, history = await _existing_children(cur, existing & file_ids)
    plan.resolve_children(file_ids | existing | outside, comments, history)


async def _existing_task_ids(cur: psycopg.AsyncCursor, ids: set[str]) -> set[str]:
    if not ids:
        return set()
    await cur.execute("SELECT id FROM mc_tasks WHERE id = ANY(%s)", (list(ids),))
    return {row[0] for row in await cur.fetchall()}


async def _existing_children(cur: psycopg.AsyncCursor, task_ids: set[str]) -> tuple[Counter, Counter]:
    """Comments and history entries of tasks that exist already, as the identities the plan compares."""
    comments: Counter = Counter()
    history: Counter = Counter()
    if not task_ids:
        return comments, history
    ids = list(task_ids)
    await cur.execute("SELECT task_id, author, body, created_at FROM mc_comments WHERE task_id = ANY(%s)", (ids,))
    comments.update(tuple(row) for row in await cur.fetchall())
    await cur.execute("SELECT task_id, field, old_value, new_value, changed_by, changed_at FROM mc_history "
                      "WHERE task_id = ANY(%s) AND source = 'import'", (ids,))
    history.update((row[0], row[1], canonical_json(row[2]), canonical_json(row[3]), row[4], row[5])
                   for row in await cur.fetchall())
    return comments, history


async def _write(cur: psycopg.AsyncCursor, plan: Plan, sha256: str, progress: Progress | None,
                 stage: list[str], *, file_ids: set[str], existing: set[str]) -> None:
    """Writes the plan with COPY; `stage[0]` names what is being written.

    Ordered so that the server always has something to store while this process maps
    the next part (bench/mc_import.py): the tasks, mapped as they are sent (their
    verbatim lines encoded on the way); then the verbatim rows that are complete already
    (tasks' and other tables'), comments and history mapped between their writes; then
    comments and history; then their verbatim rows."""
    labels = TASK_COLUMNS.index("labels")
    verbatim = _VerbatimRows(cur, plan, sha256, progress)
    children = import_transform.child_tables(plan)

    def task_rows() -> Iterator[list]:
        # Mapped as they are sent: the server stores each block while the next is mapped,
        # and has work enough that the tasks' verbatim rows are encoded here too (unless
        # the table is also one of comments or history: its rows are complete only later).
        source = next((table for table in plan.tables if table.name == plan.detected.tables["tasks"]), None)
        lines = verbatim.prepared.setdefault(source.name, []) if source and source.name not in children else None
        for task in import_transform.map_tasks(plan):
            if lines is not None:
                lines.append(verbatim.line(source, task.source, task.row))
            if task.write:
                row = [task.values[column] for column in TASK_COLUMNS]
                row[labels] = text_array(row[labels])
                yield row

    await copy_rows(cur, "mc_tasks", TASK_COLUMNS, task_rows(), sum(task.write for task in plan.tasks), progress)
    # Comments and history are mapped a step at a time between the writes of these
    # lines: a thread would hold the GIL for 5 ms at a time while the server, whose
    # socket buffer holds ~2 ms of work, waits for more (bench/mc_import.py).
    mapping = import_transform.map_children(plan)
    stage[0] = "the verbatim source rows"
    await verbatim.write([table.name for table in plan.tables if table.name not in children], between=mapping)
    for _ in mapping:
        pass
    await _resolve_children(cur, plan, file_ids, existing)
    for table, items, columns in (("mc_comments", plan.comments, COMMENT_COLUMNS),
                                  ("mc_history", plan.history, HISTORY_COLUMNS)):
        stage[0] = f"the {table.removeprefix('mc_')}"
        written = [child for child in items if child.write]
        ids = await _reserve_ids(cur, table, len(written))
        for child, new_id in zip(written, ids, strict=True):
            child.source.target_id = str(new_id)
        # COPY writes the given ids into GENERATED ALWAYS identity columns (as OVERRIDING SYSTEM VALUE).
        await copy_rows(cur, table, columns, ((new_id, child.task_id, *child.values) for child, new_id in
                                          zip(written, ids, strict=True)), len(written), progress)
    stage[0] = "the verbatim source rows"
    await verbatim.write(children)
    stage[0] = "the parent links"
    # The parent foreign key is deferred to commit; checking it here puts a failure in this report.
    await cur.execute(f"SET CONSTRAINTS {PARENT_FOREIGN_KEY} IMMEDIATE")
    await cur.execute(f"SET CONSTRAINTS {PARENT_FOREIGN_KEY} DEFERRED")


class _VerbatimRows:
    """Every source row into mc_import_rows, a few tables at a time, as one progress stage."""

    COLUMNS = ("source_sha256", "source_table", "source_key", "data", "target_id", "problems")

    def __init__(self, cur: psycopg.AsyncCursor, plan: Plan, sha256: str, progress: Progress | None) -> None:
        self.cur, self.plan, self.sha256, self.progress = cur, plan, sha256, progress
        self.total, self.done = len(plan.source_rows), 0
        self.stage = "write mc_import_rows"
        self.prepared: dict[str, list[str]] = {}  # table -> its lines, encoded ahead

    async def write(self, names: list[str], *, between: Iterator[None] | None = None) -> None:
        """The rows of the named tables: their data encoded here, as COPY text lines; psycopg's
        per-row adaptation costs more than the rows' content (bench/mc_import.py). A step of
        `between` is taken after each write, while the server stores what was sent."""
        if self.progress and self.done == 0:
            self.progress(self.stage, 0, self.total)
        block: list[str] = []
        size = 0
        async with self.cur.copy(f"COPY mc_import_rows ({', '.join(self.COLUMNS)}) FROM STDIN") as copy:
            for line in self._lines(names):
                block.append(line)
                size += len(line)
                # Small blocks: a write returns once the socket has taken it, and a block
                # the socket cannot hold would leave the server idle while the next is made.
                if size >= COPY_BLOCK:
                    await copy.write("".join(block))
                    self._advance(len(block))
                    block.clear()
                    size = 0
                    if between is not None:
                        next(between, None)
            if block:
                await copy.write("".join(block))
                self._advance(len(block))

    def line(self, table: SourceTable, out: SourceRow, row: tuple) -> str:
        """The COPY text line of one source row, once its problems and target are known."""
        data = values.verbatim_json(table.columns, row, careful=table.has_bad_text)
        return "\t".join((self.sha256, copy_text(table.name), copy_text(out.key), copy_text(data),
                          copy_text(out.target_id), copy_text(text_array(out.problems)))) + "\n"

    def _lines(self, names: list[str]) -> Iterator[str]:
        for table in self.plan.tables:
            if table.name in self.prepared and table.name in names:
                yield from self.prepared.pop(table.name)
            elif table.name in names:
                for out, row in zip(self.plan.rows_of_table[table.name], table.rows, strict=True):
                    yield self.line(table, out, row)

    def _advance(self, rows: int) -> None:
        before, self.done = self.done, self.done + rows
        if self.progress and (self.done // PROGRESS_EVERY > before // PROGRESS_EVERY or self.done == self.total):
            self.progress(self.stage, self.done, self.total)


def _map_everything(plan: Plan) -> None:
    for _ in import_transform.map_tasks(plan):
        pass
    import_transform.transform_children(plan)


def copy_text(value: str | None) -> str:
    """A value in COPY's text format (NUL cannot occur: text here never holds one)."""
    if value is None:
        return "\\N"
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def text_array(items: list[str]) -> str:
    """A text[] literal for COPY: psycopg's list adapter costs more than the rest of
    a verbatim row, and most of these lists are empty."""
    if not items:
        return "{}"
    return "{" + ",".join('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items) + "}"


async def _reserve_ids(cur: psycopg.AsyncCursor, table: str, count: int) -> list[int]:
    """`count` consecutive ids from the table's identity sequence, as one block.

    The table lock (it lets readers on) holds back other inserts, which would take
    their ids from the same sequence between our nextval and setval; they wait the
    length of the import. One setval instead of `count` nextval calls.
    """
    if count == 0:
        return []
    await cur.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
    await cur.execute(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id'))")
    first = (await cur.fetchone())[0]
    if count > 1:
        await cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)", (first + count - 1,))
    return list(range(first, first + count))


async def copy_rows(cur: psycopg.AsyncCursor, table: str, columns: tuple[str, ...], rows, total: int,
                    progress: Progress | None) -> None:
    """COPY of `rows` into `table`, reporting progress every PROGRESS_EVERY rows (the HiveMind import too)."""
    stage = f"write {table}"
    if progress:
        progress(stage, 0, total)
    done = 0
    async with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            await copy.write_row(row)
            done += 1
            if progress and done % PROGRESS_EVERY == 0:
                progress(stage, done, total)
    if progress:
        progress(stage, total, total)


async def _advance_task_number(cur: psycopg.AsyncCursor, ids: set[str]) -> None:
    """Moves mc_task_number past the highest imported MC-<n>, so new tasks never reuse an id.

    setval is not undone by a rollback; should the caller's commit fail, the sequence
    has only skipped some numbers.
    """
    numbers = [int(match.group(1)) for match in map(SEQUENCE_ID.match, ids) if match]
    if not numbers:
        return
    highest = max(numbers)
    await cur.execute("SELECT setval('mc_task_number', %s) FROM mc_task_number "
                      "WHERE %s >= CASE WHEN is_called THEN last_value + 1 ELSE last_value END", (highest, highest))


def _report(plan: Plan, *, source: str, sha256: str, dry_run: bool, already_imported: bool, written_rows: int,
            duration: float) -> ImportReport:
    counts = import_transform.table_counts(plan)
    tables = [ImportTableReport(table=name, rows_read=read, rows_written=written, rows_with_problems=problems)
              for name, (read, written, problems) in counts.items()]
    tables.append(ImportTableReport(table="mc_import_rows", rows_read=len(plan.source_rows), rows_written=written_rows,
                                    rows_with_problems=sum(1 for row in plan.source_rows if row.problems)))
    warnings = [*plan.notes, *row_warnings(plan.source_rows, "mc_import_rows")]
    return ImportReport(
        source=source, source_sha256=sha256, dry_run=dry_run, already_imported=already_imported, tables=tables,
        status_map=plan.status_map, priority_map=plan.priority_map, column_map=plan.column_map, warnings=warnings,
        duration_seconds=round(duration, 3),
    )


def row_warnings(source_rows, table: str) -> list[str]:
    """The rows' problems as report warnings, at most MAX_ROW_WARNINGS, then where the rest are."""
    problems = [f"{row.table} {row.key}: {problem}" for row in source_rows for problem in row.problems]
    if len(problems) <= MAX_ROW_WARNINGS:
        return problems
    return [*problems[:MAX_ROW_WARNINGS], f"… and {len(problems) - MAX_ROW_WARNINGS} more problem(s): "
                                          f"see {table}.problems"]
