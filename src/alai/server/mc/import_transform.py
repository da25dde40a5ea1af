"""Turning legacy rows into mc_tasks, mc_comments and mc_history rows.

`transform` needs no database: it converts every row and records its problems.
`Plan.resolve` then takes what the database already holds (tasks with the same ids,
comments and history already imported) and decides, row by row, what is written.
Every source row ends up in `Plan.source_rows` whatever happens to it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from alai.server.mc import import_values as values
from alai.server.mc.import_source import TARGET_TABLES, Detected, SourceTable
from alai.wire.mc import COMMENT_MAX, DESCRIPTION_MAX, TITLE_MAX

TASK_COLUMNS = ("id", "title", "description", "status", "priority", "assignee", "project", "labels", "parent_id",
                "due_date", "metadata", "created_at", "updated_at", "closed_at", "archived_at", "created_by")
COMMENT_COLUMNS = ("id", "task_id", "author", "body", "created_at")
HISTORY_COLUMNS = ("id", "task_id", "field", "old_value", "new_value", "changed_by", "changed_at", "source")
FALLBACK_ACTOR = "import"
NO_STATUS = "(none)"


@dataclass
class SourceRow:
    """One source row as mc_import_rows keeps it."""

    table: str
    key: str
    data: str
    problems: list[str] = field(default_factory=list)
    target_id: str | None = None


@dataclass
class TaskCandidate:
    values: dict[str, Any]
    parent_ref: str | None
    source: SourceRow
    write: bool = False


@dataclass
class ChildCandidate:
    """A comment or a history entry: written only if its task exists."""

    task_id: str | None
    values: tuple
    source: SourceRow
    identity: tuple  # what makes two rows the same comment or the same change
    write: bool = False


def canonical_json(value: Any) -> str | None:
    """A JSON value as text that compares equal however jsonb ordered its keys."""
    return None if value is None else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


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

    def referenced_task_ids(self) -> set[str]:
        ids = {task.values["id"] for task in self.tasks}
        ids.update(task.parent_ref for task in self.tasks if task.parent_ref)
        ids.update(child.task_id for child in (*self.comments, *self.history) if child.task_id)
        return ids

    def resolve(self, existing_ids: set[str], existing_comments: Counter, existing_history: Counter) -> None:
        """Decides what is written, given what the database already holds."""
        new_ids = {task.values["id"] for task in self.tasks if task.values["id"] not in existing_ids}
        kept = sorted(task.values["id"] for task in self.tasks if task.values["id"] in existing_ids)
        if kept:
            self.notes.append(f"{len(kept)} task(s) already existed and were left unchanged: "
                              f"{', '.join(kept[:10])}{' …' if len(kept) > 10 else ''}")
        known = new_ids | existing_ids
        for task in self.tasks:
            task.write = task.values["id"] in new_ids
            ref = task.parent_ref
            if task.write and ref is not None:
                if ref == task.values["id"]:
                    task.source.problems.append("the task is its own parent; parent cleared")
                elif ref not in known:
                    task.source.problems.append(f"parent {ref!r} not found; parent cleared")
                else:
                    task.values["parent_id"] = ref
        self._break_parent_cycles()
        for children, present, what in ((self.comments, existing_comments, "comment"),
                                        (self.history, existing_history, "history entry")):
            already = Counter(present)
            duplicates = 0
            for child in children:
                if child.task_id is None:
                    child.source.problems.append("no task id; kept only in mc_import_rows")
                elif child.task_id not in known:
                    child.source.problems.append(f"task {child.task_id!r} not found; kept only in mc_import_rows")
                elif already[child.identity] > 0:  # imported before from another file
                    already[child.identity] -= 1
                    duplicates += 1
                else:
                    child.write = True
            if duplicates:
                self.notes.append(f"{duplicates} {what}(s) were already present and not imported again")

    def _break_parent_cycles(self) -> None:
        by_id = {task.values["id"]: task for task in self.tasks if task.write}
        state: dict[str, int] = {}  # 1: on the current walk, 2: known to reach a root
        for start in by_id:
            walk: list[str] = []
            current: str | None = start
            while current in by_id and current not in state:
                state[current] = 1
                walk.append(current)
                parent = by_id[current].values["parent_id"]
                if parent in by_id and state.get(parent) == 1:
                    by_id[current].values["parent_id"] = None
                    by_id[current].source.problems.append(f"parent {parent!r} makes a cycle; parent cleared")
                    break
                current = parent
            for task_id in walk:
                state[task_id] = 2


def transform(tables: list[SourceTable], detected: Detected, *, statuses: list[str],
              closed_statuses: list[str]) -> Plan:
    """Converts every row of every table (blocking: run it in a thread)."""
    plan = Plan(detected=detected, tables=tables)
    roles = {name: role for role, name in detected.tables.items() if name}
    for table in tables:
        rows = [SourceRow(table.name, key, _verbatim(table.columns, row)) for key, row in zip(table.keys, table.rows,
                                                                                             strict=True)]
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
    elif tables:
        plan.notes.append("no table of tasks found; name it with a mapping (tables: {tasks: NAME})")
    for role, build in (("comments", _comment), ("history", _history_entry)):
        name = detected.tables[role]
        if name:
            source = _table(tables, name)
            columns = detected.columns[role]
            target = plan.comments if role == "comments" else plan.history
            for row, out in zip(source.rows, plan.rows_of_table[name], strict=True):
                target.append(build(plan, columns, source.columns, row, out))
    return plan


def _table(tables: list[SourceTable], name: str) -> SourceTable:
    return next(table for table in tables if table.name == name)


def _verbatim(columns: list[str], row: tuple) -> str:
    if any(values.needs_care(value) for value in row):
        return values.verbatim_json(columns, row)
    return json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False)


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


def task_key(value: Any, prefix: str) -> str | None:
    """A legacy task reference as an mc_tasks id: numbers get the prefix ("MC-")."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return f"{prefix}{int(value)}"
    text = (values.clean_text(value)[0] or "").strip()
    if not text:
        return None
    return f"{prefix}{int(text)}" if text.isascii() and text.isdigit() else text


def _status_table(plan: Plan, source: SourceTable, column: str | None, statuses: list[str]) -> Counter:
    seen: Counter = Counter()
    if column is not None:
        position = source.columns.index(column)
        seen.update(None if row[position] is None else str(row[position]) for row in source.rows)
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
    plan: Plan
    columns: dict[str, str]  # target field -> source column
    position: dict[str, int]  # target field -> index in the row
    extra: list[tuple[str, int]]  # columns without a field: they go to metadata
    unknown_statuses: Counter
    closed_statuses: list[str]
    seen_ids: Counter
    now: datetime


def _tasks(plan: Plan, source: SourceTable, statuses: list[str], closed_statuses: list[str]) -> None:
    columns = plan.detected.columns["tasks"]
    context = _TaskContext(
        plan=plan, columns=columns, position={target: source.columns.index(column) for target, column in columns.items()},
        extra=[(name, index) for index, name in enumerate(source.columns) if name not in columns.values()],
        unknown_statuses=_status_table(plan, source, columns.get("status"), statuses),
        closed_statuses=closed_statuses, seen_ids=Counter(), now=datetime.now(UTC),
    )
    for row, out in zip(source.rows, plan.rows_of_table[source.name], strict=True):
        plan.tasks.append(_task(context, row, out))


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


def _task(context: _TaskContext, row: tuple, out: SourceRow) -> TaskCandidate:
    plan, columns = context.plan, context.columns
    reader = _TaskRow(context, row, out)
    problems, prefix = out.problems, plan.detected.id_prefix
    task_id = task_key(reader.get("id"), prefix)
    if task_id is None:
        task_id = f"legacy-{out.key}"
        problems.append(f"no id; imported as {task_id!r}")
    context.seen_ids[task_id] += 1
    if context.seen_ids[task_id] > 1:
        task_id, original = f"{task_id}-dup{context.seen_ids[task_id]}", task_id
        problems.append(f"id {original!r} appears more than once; imported as {task_id!r}")
    out.target_id = task_id
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
        "project": reader.text("project") or None, "labels": labels, "parent_id": None, "due_date": due,
        "metadata": None, "created_at": created, "updated_at": updated or created, "closed_at": closed,
        "archived_at": reader.moment("archived_at"), "created_by": reader.text("created_by") or FALLBACK_ACTOR,
    }
    task["metadata"] = json.dumps(metadata, ensure_ascii=False)
    return TaskCandidate(task, task_key(reader.get("parent_id"), prefix), out)


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


def _when(plan: Plan, raw: Any, problems: list[str], what: str) -> datetime:
    moment, problem = values.parse_timestamp(raw)
    if moment is None:
        problems.append(f"{what}: {problem}; imported as now" if problem else f"no {what}; imported as now")
        return datetime.now(UTC)
    return moment


def _comment(plan: Plan, columns: dict[str, str], names: list[str], row: tuple, out: SourceRow) -> ChildCandidate:
    get = _getter(columns, names, row)
    problems = out.problems
    body, problem = values.clean_text(get("body"))
    if problem:
        problems.append(f"body: {problem}")
    if not body or not body.strip():
        body = "(empty comment)"
        problems.append("empty comment; imported as '(empty comment)'")
    elif len(body) > COMMENT_MAX:
        body = body[:COMMENT_MAX]
        problems.append(f"body longer than {COMMENT_MAX} characters; cut")
    author = (values.clean_text(get("author"))[0] or "").strip() or FALLBACK_ACTOR
    created = _when(plan, get("created_at"), problems, "created_at")
    task_id = task_key(get("task_id"), plan.detected.id_prefix)
    return ChildCandidate(task_id, (author, body, created), out, identity=(task_id, author, body, created))


def _history_entry(plan: Plan, columns: dict[str, str], names: list[str], row: tuple,
                   out: SourceRow) -> ChildCandidate:
    get = _getter(columns, names, row)
    problems = out.problems
    source_field = (values.clean_text(get("field"))[0] or "").strip()
    if not source_field:
        source_field = "(unknown)"
        problems.append("no field name; imported as '(unknown)'")
    # The old tool named fields after its columns: speak of them by their new names.
    task_columns = {source: target for target, source in plan.detected.columns.get("tasks", {}).items()}
    target_field = task_columns.get(source_field, source_field)
    old, new = (_history_value(plan, target_field, get(name)) for name in ("old_value", "new_value"))
    changed_by = (values.clean_text(get("changed_by"))[0] or "").strip() or FALLBACK_ACTOR
    changed_at = _when(plan, get("changed_at"), problems, "changed_at")
    old_json, new_json = (None if v is None else json.dumps(v, ensure_ascii=False) for v in (old, new))
    task_id = task_key(get("task_id"), plan.detected.id_prefix)
    identity = (task_id, target_field, canonical_json(old), canonical_json(new), changed_by, changed_at)
    return ChildCandidate(task_id, (target_field, old_json, new_json, changed_by, changed_at, "import"), out,
                          identity=identity)


def _history_value(plan: Plan, target_field: str, raw: Any) -> Any:
    if raw is None:
        return None
    if target_field == "status" and str(raw) in plan.status_map:
        return plan.status_map[str(raw)]
    if target_field == "priority":
        return values.guess_priority(raw)[0]
    if target_field == "labels":
        return values.parse_labels(raw)[0]
    if isinstance(raw, str) and raw[:1] in "[{" and raw:
        parsed, ok = values.parse_json(raw)
        if ok:
            return parsed
    value = values.jsonable(raw)
    return values.clean_text(value)[0] if isinstance(value, str) else value


def _getter(columns: dict[str, str], names: list[str], row: tuple):
    position = {target: names.index(column) for target, column in columns.items()}
    return lambda target: row[position[target]] if target in position else None


def table_counts(plan: Plan) -> dict[str, tuple[int, int, int]]:
    """Per source table: (rows read, rows written to its target, rows with problems)."""
    written: Counter = Counter()
    for role, items in (("tasks", plan.tasks), ("comments", plan.comments), ("history", plan.history)):
        name = plan.detected.tables[role]
        if name:
            written[name] = sum(1 for item in items if item.write)
    return {name: (len(rows), written[name], sum(1 for row in rows if row.problems))
            for name, rows in plan.rows_of_table.items()}
