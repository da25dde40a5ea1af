"""Turning legacy rows into mc_tasks, mc_comments and mc_history rows.

`transform_tasks` and `transform_children` need no database: they convert every row
and record its problems. `Plan.resolve_tasks` and `Plan.resolve_children` then take what
the database already holds (tasks with the same ids, comments and history imported
before) and decide, row by row, what is written. Every source row ends up in
`Plan.source_rows` whatever happens to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alai.server.mc import import_children
from alai.server.mc import import_values as values
from alai.server.mc.import_children import ChildCandidate, SourceRow
from alai.server.mc.import_source import TARGET_TABLES, Detected, SourceTable
from alai.wire.mc import DESCRIPTION_MAX, TITLE_MAX

TASK_COLUMNS = ("id", "title", "description", "status", "priority", "assignee", "project", "labels", "parent_id",
                "due_date", "metadata", "created_at", "updated_at", "closed_at", "archived_at", "created_by")
COMMENT_COLUMNS = ("id", "task_id", "author", "body", "created_at")
HISTORY_COLUMNS = ("id", "task_id", "field", "old_value", "new_value", "changed_by", "changed_at", "source")
NO_STATUS = "(none)"


@dataclass
class TaskCandidate:
    """A legacy task: its id and parent are known first (`transform_tasks`), its
    fields once mapped (`map_tasks`), so tasks can be written as they are mapped."""

    task_id: str
    parent_ref: str | None
    row: tuple
    source: SourceRow
    parent_id: str | None = None
    values: dict[str, Any] | None = None
    write: bool = False


@dataclass
class Plan:
    detected: Detected
    tables: list[SourceTable]
    source_rows: list[SourceRow] = field(default_factory=list)
    tasks: list[TaskCandidate] = field(default_factory=list)
    comments: list[ChildCandidate] = field(default_factory=list)
    history: list[ChildCandidate] = field(default_factory=list)
    status_map: dict[str, str] = field(default_factory=dict)
    priority_map: dict[str, int] = field(default_factory=dict)
    column_map: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    rows_of_table: dict[str, list[SourceRow]] = field(default_factory=dict)
    task_context: _TaskContext | None = None

    @property
    def task_ids(self) -> set[str]:
        return {task.task_id for task in self.tasks}

    def parent_refs(self) -> set[str]:
        return {task.parent_ref for task in self.tasks if task.parent_ref}

    def child_refs(self) -> set[str]:
        return {child.task_id for child in (*self.comments, *self.history) if child.task_id}

    def resolve_tasks(self, existing_ids: set[str]) -> None:
        """Decides which tasks are written and links their parents, given the ids that exist already."""
        ids = self.task_ids
        kept = sorted(ids & existing_ids)
        if kept:
            self.notes.append(f"{len(kept)} task(s) already existed and were left unchanged: "
                              f"{', '.join(kept[:10])}{' …' if len(kept) > 10 else ''}")
        known = ids | existing_ids
        for task in self.tasks:
            task.write = task.task_id not in existing_ids
            ref = task.parent_ref
            if task.write and ref is not None:
                if ref == task.task_id:
                    task.source.problems.append("the task is its own parent; parent cleared")
                elif ref not in known:
                    task.source.problems.append(f"parent {ref!r} not found; parent cleared")
                else:
                    task.parent_id = ref
        self._break_parent_cycles()

    def resolve_children(self, known_ids: set[str], existing_comments: Counter, existing_history: Counter) -> None:
        """Decides which comments and history entries are written: those whose task is known
        (in the file or in the database), unless the same row is already there."""
        for children, present, what in ((self.comments, existing_comments, "comment"),
                                        (self.history, existing_history, "history entry")):
            already = Counter(present)
            duplicates = 0
            for child in children:
                if child.task_id is None:
                    child.source.problems.append("no task id; kept only in mc_import_rows")
                elif child.task_id not in known_ids:
                    child.source.problems.append(f"task {child.task_id!r} not found; kept only in mc_import_rows")
                elif already and already[child.identity] > 0:  # imported before, from another file
                    already[child.identity] -= 1
                    duplicates += 1
                else:
                    child.write = True
            if duplicates:
                self.notes.append(f"{duplicates} {what}(s) were already present and not imported again")

    def _break_parent_cycles(self) -> None:
        by_id = {task.task_id: task for task in self.tasks if task.write}
        state: dict[str, int] = {}  # 1: on the current walk, 2: known to reach a root
        for start in by_id:
            walk: list[str] = []
            current: str | None = start
            while current in by_id and current not in state:
                state[current] = 1
                walk.append(current)
                parent = by_id[current].parent_id
                if parent in by_id and state.get(parent) == 1:
                    by_id[current].parent_id = None
                    by_id[current].source.problems.append(f"parent {parent!r} makes a cycle; parent cleared")
                    break
                current = parent
            for task_id in walk:
                state[task_id] = 2


def transform_tasks(tables: list[SourceTable], detected: Detected, *, statuses: list[str],
                    closed_statuses: list[str]) -> Plan:
    """Describes every table and reads each task's id and parent (blocking: run it in a thread).

    The tasks' fields are mapped by `map_tasks`, as they are written; comments and
    history by `map_children`, a step at a time."""
    plan = Plan(detected=detected, tables=tables)
    roles = {name: role for role, name in detected.tables.items() if name}
    for table in tables:
        rows = [SourceRow(table.name, key) for key in table.keys]
        plan.rows_of_table[table.name] = rows
        plan.source_rows.extend(rows)
        role = roles.get(table.name)
        if table.error:
            plan.notes.append(f"table {table.name!r} could not be read completely ({table.error}); "
                              f"{len(table.rows)} row(s) kept")
        if role is None:
            plan.column_map[table.name] = "mc_import_rows"
            if table.rows:
                plan.notes.append(f"table {table.name!r} is not Mission Control data; its {len(table.rows)} row(s) "
                                  "are kept verbatim in mc_import_rows")
            continue
        plan.column_map[table.name] = TARGET_TABLES[role]
        _map_columns(plan, table, role)
    tasks_table = detected.tables["tasks"]
    if tasks_table:
        _tasks(plan, _table(tables, tasks_table), statuses, closed_statuses)
    else:
        plan.notes.append("no table of tasks found; name it with a mapping (tables: {tasks: NAME})"
                          if tables else "the file has no tables")
    return plan


def transform_children(plan: Plan) -> None:
    """Converts comments and history."""
    for _ in map_children(plan):
        pass


def map_children(plan: Plan, step: int = 128) -> Iterator[None]:
    """Converts comments and history into `plan.comments` and `plan.history`, pausing
    (yielding) after every `step` rows, so that a writer can keep the server fed between
    steps in the same thread (each step is a fraction of a millisecond)."""
    detected, tables = plan.detected, plan.tables
    found: list[tuple[Iterator[ChildCandidate], list[ChildCandidate]]] = []
    if detected.tables["comments"]:
        source = _table(tables, detected.tables["comments"])
        plan.comments = []
        found.append((import_children.comments(source, plan.rows_of_table[source.name], detected.columns["comments"],
                                               detected.id_prefix), plan.comments))
    if detected.tables["history"]:
        source = _table(tables, detected.tables["history"])
        # The old tool named fields after its columns: history speaks of them by their new names.
        field_names = {column: target for target, column in detected.columns.get("tasks", {}).items()}
        plan.history = []
        found.append((import_children.history(source, plan.rows_of_table[source.name], detected.columns["history"],
                                              detected.id_prefix, field_names=field_names,
                                              status_map=plan.status_map), plan.history))
    for candidates, into in found:
        for count, child in enumerate(candidates, 1):
            into.append(child)
            if count % step == 0:
                yield


def child_tables(plan: Plan) -> list[str]:
    """The tables whose rows become comments and history entries: their verbatim rows
    are complete only once `Plan.resolve_children` has run."""
    return [name for role, name in plan.detected.tables.items() if name and role != "tasks"]


def _table(tables: list[SourceTable], name: str) -> SourceTable:
    return next(table for table in tables if table.name == name)


def _map_columns(plan: Plan, table: SourceTable, role: str) -> None:
    mapped = plan.detected.columns[role]
    for target, source in mapped.items():
        plan.column_map[f"{table.name}.{source}"] = f"{TARGET_TABLES[role]}.{target}"
    rest = [column for column in table.columns if column not in mapped.values()]
    where = "mc_tasks.metadata" if role == "tasks" else "mc_import_rows"
    for column in rest:
        plan.column_map[f"{table.name}.{column}"] = f"{where}.{column}" if role == "tasks" else where
    unmapped = [column for column in rest if column not in table.key_columns or role == "tasks"]
    if unmapped:
        plan.notes.append(f"table {table.name!r}: column(s) {', '.join(unmapped)} have no field of their own; "
                          f"kept in {where}")


def _status_table(plan: Plan, source: SourceTable, column: str | None, statuses: list[str]) -> Counter:
    seen: Counter = Counter()
    if column is not None:
        position = source.columns.index(column)
        seen.update(None if row[position] is None else str(row[position]) for row in source.rows)
    elif source.rows:  # no status column at all: every task is without one
        seen[None] = len(source.rows)
    unknown: Counter = Counter()
    for status, count in seen.items():
        if status is None:
            plan.status_map[NO_STATUS] = statuses[0]
            continue
        target = plan.detected.statuses.get(status) or values.guess_status(status, statuses)
        if target is None:
            target = statuses[0]
            unknown[status] = count
        plan.status_map[status] = target
    for status, count in unknown.items():
        plan.notes.append(f"status {status!r} ({count} task(s)) is not in the workflow; imported as "
                          f"{statuses[0]!r} (map it with statuses: {{{status!r}: ...}})")
    return unknown


@dataclass
class _TaskContext:
    # No reference back to the plan, which holds this: a cycle would leave the whole
    # plan to the garbage collector instead of freeing it when the import ends.
    columns: dict[str, str]  # target field -> source column
    position: dict[str, int]  # target field -> index in the row
    extra: list[tuple[str, int]]  # columns without a field: they go to metadata
    unknown_statuses: Counter
    closed_statuses: list[str]
    now: datetime


def _tasks(plan: Plan, source: SourceTable, statuses: list[str], closed_statuses: list[str]) -> None:
    columns = plan.detected.columns["tasks"]
    context = _TaskContext(
        columns=columns, position={target: source.columns.index(column) for target, column in columns.items()},
        extra=[(name, index) for index, name in enumerate(source.columns) if name not in columns.values()],
        unknown_statuses=_status_table(plan, source, columns.get("status"), statuses),
        closed_statuses=closed_statuses, now=datetime.now(UTC),
    )
    plan.task_context = context
    prefix = plan.detected.id_prefix
    id_at, parent_at = context.position.get("id"), context.position.get("parent_id")
    seen_ids: Counter = Counter()
    for row, out in zip(source.rows, plan.rows_of_table[source.name], strict=True):
        task_id = None if id_at is None else values.task_key(row[id_at], prefix)
        if task_id is None:
            task_id = f"legacy-{out.key}"
            out.problems.append(f"no id; imported as {task_id!r}")
        seen_ids[task_id] += 1
        if seen_ids[task_id] > 1:
            task_id, original = f"{task_id}-dup{seen_ids[task_id]}", task_id
            out.problems.append(f"id {original!r} appears more than once; imported as {task_id!r}")
        out.target_id = task_id
        parent_ref = None if parent_at is None else values.task_key(row[parent_at], prefix)
        plan.tasks.append(TaskCandidate(task_id, parent_ref, row, out))


def map_tasks(plan: Plan) -> Iterator[TaskCandidate]:
    """Maps each task's fields, once its parent is resolved (`Plan.resolve_tasks`), and
    yields it; tasks mapped before are yielded as they are."""
    context = plan.task_context
    for task in plan.tasks:
        if task.values is None and context is not None:
            task.values = _task(plan, context, task)
        yield task


class _TaskRow:
    """Reads one legacy task row field by field, noting each problem on the way."""

    def __init__(self, context: _TaskContext, row: tuple, out: SourceRow) -> None:
        self.context, self.row, self.problems = context, row, out.problems
        self.metadata: dict[str, Any] = {}

    def get(self, target: str) -> Any:
        index = self.context.position.get(target)
        return None if index is None else self.row[index]

    def text(self, target: str, limit: int | None = None) -> str | None:
        value, problem = values.clean_text(self.get(target))
        if problem:
            self.problems.append(f"{target}: {problem}")
        if value is not None and limit is not None and len(value) > limit:
            self.problems.append(f"{target} longer than {limit} characters; cut")
            value = value[:limit]
        return value

    def moment(self, target: str) -> datetime | None:
        parsed, problem = values.parse_timestamp(self.get(target))
        if problem:
            self.problems.append(f"{target}: {problem}; original kept in metadata")
            self.metadata[self.context.columns[target]] = values.jsonable(self.get(target))
        return parsed


def _task(plan: Plan, context: _TaskContext, candidate: TaskCandidate) -> dict[str, Any]:
    columns, row, out = context.columns, candidate.row, candidate.source
    reader = _TaskRow(context, row, out)
    problems, task_id = out.problems, candidate.task_id
    metadata = reader.metadata
    metadata.update(_metadata(reader.get("metadata"), columns.get("metadata"), problems))
    for name, index in context.extra:
        if row[index] is not None:
            metadata[name if name not in metadata else f"legacy_{name}"] = values.jsonable(row[index])

    title = (reader.text("title", TITLE_MAX) or "").strip()
    if not title:
        title = f"(untitled {task_id})"[:TITLE_MAX]
        problems.append(f"no title; imported as {title!r}")
    raw_status = reader.get("status")
    status = plan.status_map[NO_STATUS if raw_status is None else str(raw_status)]
    if raw_status is None:
        problems.append(f"no status; imported as {status!r}")
    elif str(raw_status) in context.unknown_statuses:
        problems.append(f"status {str(raw_status)!r} is not in the workflow; imported as {status!r}")
    priority, problem = _priority(plan, reader.get("priority"))
    labels, labels_problem = values.parse_labels(reader.get("labels"))
    due, due_problem = values.parse_date(reader.get("due_date"))
    problems.extend(p for p in (problem, labels_problem) if p)
    if due_problem:
        problems.append(f"due_date: {due_problem}; original kept in metadata")
        metadata[columns["due_date"]] = values.jsonable(reader.get("due_date"))
    created, updated, closed = reader.moment("created_at"), reader.moment("updated_at"), reader.moment("closed_at")
    if created is None:
        created = updated or closed or context.now
        problems.append("no creation time; imported as "
                        + ("the update time" if updated else "the completion time" if closed else "now"))
    if status in context.closed_statuses:
        closed = closed or updated or created
    elif closed is not None:  # reopened in the old tool: here an open task has no closed_at
        metadata.setdefault(columns["closed_at"], values.jsonable(reader.get("closed_at")))
        closed = None
    task = {
        "id": task_id, "title": title, "description": reader.text("description", DESCRIPTION_MAX),
        "status": status, "priority": priority, "assignee": reader.text("assignee") or None,
        "project": reader.text("project") or None, "labels": labels, "parent_id": candidate.parent_id, "due_date": due,
        "metadata": None, "created_at": created, "updated_at": updated or created, "closed_at": closed,
        "archived_at": reader.moment("archived_at"), "created_by": reader.text("created_by") or values.FALLBACK_ACTOR,
    }
    task["metadata"] = values.to_json(metadata)
    return task


def _metadata(raw: Any, column: str | None, problems: list[str]) -> dict[str, Any]:
    if raw is None or column is None:
        return {}
    if not isinstance(raw, str) or isinstance(raw, values.BadText):
        return {column: values.jsonable(raw)}
    parsed, ok = values.parse_json(raw) if raw.strip() else ({}, True)
    if not ok:
        problems.append(f"{column} is not valid JSON; kept as text in metadata.{column}")
        return {column: values.clean_text(raw)[0]}
    return parsed if isinstance(parsed, dict) else {column: parsed}


def _priority(plan: Plan, raw: Any) -> tuple[int, str | None]:
    label = str(raw) if raw is not None else None
    if label is not None and label in plan.detected.priorities:
        priority, problem = plan.detected.priorities[label], None
    else:
        priority, problem = values.guess_priority(raw)
    if label is not None:
        plan.priority_map[label] = priority
    return priority, problem


def table_counts(plan: Plan) -> dict[str, tuple[int, int, int]]:
    """Per source table: (rows read, rows written to its target, rows with problems)."""
    written: Counter = Counter()
    for role, items in (("tasks", plan.tasks), ("comments", plan.comments), ("history", plan.history)):
        name = plan.detected.tables[role]
        if name:
            written[name] = sum(1 for item in items if item.write)
    return {name: (len(rows), written[name], sum(1 for row in rows if row.problems))
            for name, rows in plan.rows_of_table.items()}
