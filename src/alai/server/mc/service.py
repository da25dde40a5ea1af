"""Mission Control tasks, comments and history (SQL lives here).

Every change writes its history rows and one change event (mc_events) in the same
transaction as the change itself, so the stream can never show a change that did not
happen, nor miss one that did. Functions take `conn` keyword-only and never commit.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection, errors
from psycopg.types.json import Jsonb

from alai.server.problems import ProblemError
from alai.wire.mc import BulkFilter, Comment, HistoryEntry, HistoryPage, Task, TaskCreate, TaskPage, TaskPatch
from alai.wire.problem import FieldError

TASK_COLUMNS = ("id, title, description, status, priority, assignee, project, labels, parent_id, due_date, metadata, "
                "created_at, updated_at, closed_at, archived_at, created_by, version")
SORTS = {
    "updated_at": ("updated_at", "ASC"), "-updated_at": ("updated_at", "DESC"),
    "created_at": ("created_at", "ASC"), "-created_at": ("created_at", "DESC"),
    "priority": ("priority", "ASC"), "-priority": ("priority", "DESC"),
    "id": ("id", "ASC"),
}
NOTIFY_CHANNEL = "alai_mc"
PATCHABLE = ("title", "description", "status", "priority", "assignee", "project", "labels", "parent_id", "due_date",
             "metadata")


@dataclass(frozen=True)
class Workflow:
    statuses: tuple[str, ...]
    closed: frozenset[str]

    @property
    def initial(self) -> str:
        return self.statuses[0]

    def check(self, status: str, field: str = "status") -> str:
        if status not in self.statuses:
            raise ProblemError(422, f"unknown status {status!r}; the workflow has {', '.join(self.statuses)}",
                               slug="validation", errors=[FieldError(field=f"body.{field}", message="unknown status")])
        return status


@dataclass(frozen=True)
class TaskFilter:
    status: list[str] | None = None
    assignee: str | None = None
    project: str | None = None
    label: str | None = None
    parent: str | None = None
    q: str | None = None
    updated_since: datetime | None = None
    archived: str = "exclude"


def _task(row: dict[str, Any]) -> Task:
    return Task(**row)


def _json_value(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


# -- events ------------------------------------------------------------------------


async def emit(conn: AsyncConnection, *, kind: str, task_id: str, actor: str, payload: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO mc_events (task_id, kind, actor, payload) VALUES (%s, %s, %s, %s)",
        (task_id, kind, actor, Jsonb(payload)),
    )
    # A wake-up only (the row is the truth); identical notifications in one
    # transaction are folded into one by PostgreSQL.
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")


def _event_task(task: Task) -> dict[str, Any]:
    return task.model_dump(mode="json")


# -- reads -------------------------------------------------------------------------


async def get_task(conn: AsyncConnection, *, task_id: str, for_update: bool = False) -> Task:
    lock = " FOR UPDATE" if for_update else ""
    cursor = await conn.execute(f"SELECT {TASK_COLUMNS} FROM mc_tasks WHERE id = %s{lock}", (task_id,))
    row = await cursor.fetchone()
    if row is None:
        raise ProblemError(404, f"no task {task_id}", slug="task-not-found")
    return _task(row)


def encode_cursor(sort: str, value: Any, task_id: str) -> str:
    raw = json.dumps({"s": sort, "v": _json_value(value), "i": task_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if data["s"] != sort:
            raise ValueError("sort changed")
        value, last_id = data["v"], data["i"]
        if not isinstance(last_id, str):
            raise TypeError("id")
        field = sort.lstrip("-")
        if field in ("updated_at", "created_at"):
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                raise ValueError("naive timestamp")
        elif field == "priority" and not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 4):
            raise ValueError("priority")
        return value, last_id
    except (ValueError, KeyError, TypeError) as error:
        raise ProblemError(400, "the cursor is not valid for this listing; start again without it",
                           slug="bad-cursor") from error


async def list_tasks(conn: AsyncConnection, *, where: TaskFilter, sort: str, limit: int,
                     cursor: str | None) -> TaskPage:
    if sort not in SORTS:
        raise ProblemError(422, f"sort must be one of {', '.join(SORTS)}", slug="validation")
    column, direction = SORTS[sort]
    clauses: list[str] = []
    params: list[Any] = []
    if where.archived == "exclude":
        clauses.append("archived_at IS NULL")
    elif where.archived == "only":
        clauses.append("archived_at IS NOT NULL")
    if where.status:
        clauses.append("status = ANY(%s)")
        params.append(where.status)
    for field, value in (("assignee", where.assignee), ("project", where.project), ("parent_id", where.parent)):
        if value is not None:
            clauses.append(f"{field} = %s")
            params.append(value)
    if where.label:
        clauses.append("labels @> %s")
        params.append([where.label])
    if where.q:
        # Rows an import left unindexed (search IS NULL, see migration 0002) are
        # matched by computing their vector here until the background job fills it.
        clauses.append("(search @@ websearch_to_tsquery('simple', %s) OR (search IS NULL AND "
                       "mc_search_vector(title, description) @@ websearch_to_tsquery('simple', %s)))")
        params.extend([where.q, where.q])
    if where.updated_since:
        clauses.append("updated_at >= %s")
        params.append(where.updated_since)
    if cursor:
        value, last_id = decode_cursor(cursor, sort)
        comparison = ">" if direction == "ASC" else "<"
        if column == "id":
            clauses.append(f"id {comparison} %s")
            params.append(last_id)
        else:
            clauses.append(f"({column}, id) {comparison} (%s, %s)")
            params.extend([value, last_id])
    sql = f"SELECT {TASK_COLUMNS} FROM mc_tasks"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    order = f"id {direction}" if column == "id" else f"{column} {direction}, id {direction}"
    sql += f" ORDER BY {order} LIMIT %s"
    params.append(limit + 1)
    rows = await (await conn.execute(sql, params)).fetchall()
    items = [_task(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(sort, getattr(last, column), last.id)
    return TaskPage(items=items, next_cursor=next_cursor)


# -- writes ------------------------------------------------------------------------


async def _check_parent(conn: AsyncConnection, *, parent_id: str | None, task_id: str | None) -> None:
    if parent_id is None:
        return
    if parent_id == task_id:
        raise ProblemError(422, "a task cannot be its own parent", slug="validation")
    exists = await (await conn.execute("SELECT 1 FROM mc_tasks WHERE id = %s", (parent_id,))).fetchone()
    if not exists:
        raise ProblemError(422, f"parent task {parent_id} does not exist", slug="validation",
                           errors=[FieldError(field="body.parent_id", message="no such task")])
    if task_id is not None:
        # Refuse cycles: walk up from the new parent.
        cycle = await (await conn.execute(
            """
            WITH RECURSIVE up(id, parent_id) AS (
                SELECT id, parent_id FROM mc_tasks WHERE id = %s
                UNION SELECT t.id, t.parent_id FROM mc_tasks t JOIN up ON t.id = up.parent_id)
            SELECT 1 FROM up WHERE id = %s
            """, (parent_id, task_id))).fetchone()
        if cycle:
            raise ProblemError(422, f"making {parent_id} the parent of {task_id} would create a cycle",
                               slug="validation")


def _clean_labels(labels: list[str]) -> list[str]:
    cleaned = []
    for label in labels:
        label = label.strip()
        if not label or len(label) > 64:
            raise ProblemError(422, "labels must be 1 to 64 characters", slug="validation")
        if label not in cleaned:
            cleaned.append(label)
    return cleaned


async def create_task(conn: AsyncConnection, *, data: TaskCreate, actor: str, workflow: Workflow) -> Task:
    status = workflow.check(data.status) if data.status else workflow.initial
    await _check_parent(conn, parent_id=data.parent_id, task_id=None)
    cursor = await conn.execute(
        f"""
        INSERT INTO mc_tasks (id, title, description, status, priority, assignee, project, labels, parent_id,
                              due_date, metadata, created_by, closed_at)
        VALUES ('MC-' || nextval('mc_task_number'), %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                CASE WHEN %s THEN now() END)
        RETURNING {TASK_COLUMNS}
        """,
        (data.title, data.description, status, data.priority, data.assignee, data.project,
         _clean_labels(data.labels), data.parent_id, data.due_date, Jsonb(data.metadata), actor,
         status in workflow.closed),
    )
    task = _task(await cursor.fetchone())
    await conn.execute(
        "INSERT INTO mc_history (task_id, field, old_value, new_value, changed_by) VALUES (%s, 'created', NULL, %s, %s)",
        (task.id, Jsonb({"title": task.title, "status": task.status}), actor),
    )
    await emit(conn, kind="created", task_id=task.id, actor=actor, payload={"task": _event_task(task)})
    return task


def _changes(task: Task, patch: TaskPatch) -> dict[str, tuple[Any, Any]]:
    changes: dict[str, tuple[Any, Any]] = {}
    for field in PATCHABLE:  # a fixed order, so history rows come out the same way every time
        if field not in patch.model_fields_set:
            continue
        new = getattr(patch, field)
        if field == "labels" and new is not None:
            new = _clean_labels(new)
        if field in ("title", "status", "priority", "labels", "metadata") and new is None:
            raise ProblemError(422, f"{field} cannot be null", slug="validation",
                               errors=[FieldError(field=f"body.{field}", message="may not be null")])
        old = getattr(task, field)
        if new != old:
            changes[field] = (old, new)
    return changes


async def update_task(conn: AsyncConnection, *, task_id: str, patch: TaskPatch, actor: str, workflow: Workflow,
                      if_match: int | None) -> Task:
    task = await get_task(conn, task_id=task_id, for_update=True)
    if if_match is not None and if_match != task.version:
        raise ProblemError(412, f"{task_id} changed since you read it (now version {task.version}); "
                                "read it again and reapply your change", slug="version-mismatch",
                           current_version=task.version, headers={"ETag": f'"{task.version}"'})
    changes = _changes(task, patch)
    if not changes:
        return task
    if "status" in changes:
        workflow.check(changes["status"][1])
    if "parent_id" in changes:
        await _check_parent(conn, parent_id=changes["parent_id"][1], task_id=task_id)
    return await _apply(conn, task=task, changes=changes, actor=actor, workflow=workflow)


async def _apply(conn: AsyncConnection, *, task: Task, changes: dict[str, tuple[Any, Any]], actor: str,
                 workflow: Workflow) -> Task:
    assignments = []
    params: list[Any] = []
    for field, (_, new) in changes.items():
        assignments.append(f"{field} = %s")
        params.append(Jsonb(new) if field == "metadata" else new)
    if "status" in changes:
        was_closed = changes["status"][0] in workflow.closed
        now_closed = changes["status"][1] in workflow.closed
        if now_closed and not was_closed:
            assignments.append("closed_at = now()")
        elif was_closed and not now_closed:
            assignments.append("closed_at = NULL")
    sql = (f"UPDATE mc_tasks SET {', '.join(assignments)}, updated_at = now(), version = version + 1 "
           f"WHERE id = %s RETURNING {TASK_COLUMNS}")
    try:
        row = await (await conn.execute(sql, [*params, task.id])).fetchone()
    except errors.CheckViolation as error:
        raise ProblemError(422, f"invalid value: {error.diag.message_primary}", slug="validation") from None
    updated = _task(row)
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO mc_history (task_id, field, old_value, new_value, changed_by) VALUES (%s, %s, %s, %s, %s)",
            [(task.id, field, Jsonb(_json_value(old)), Jsonb(_json_value(new)), actor)
             for field, (old, new) in changes.items()],
        )
    await emit(conn, kind="updated", task_id=task.id, actor=actor, payload={
        "task": _event_task(updated),
        "changes": {field: [_json_value(old), _json_value(new)] for field, (old, new) in changes.items()},
    })
    return updated


async def set_archived(conn: AsyncConnection, *, task_id: str, archived: bool, actor: str) -> Task:
    task = await get_task(conn, task_id=task_id, for_update=True)
    if (task.archived_at is not None) == archived:
        return task
    row = await (await conn.execute(
        f"UPDATE mc_tasks SET archived_at = {'now()' if archived else 'NULL'}, updated_at = now(), "
        f"version = version + 1 WHERE id = %s RETURNING {TASK_COLUMNS}", (task_id,))).fetchone()
    updated = _task(row)
    await conn.execute(
        "INSERT INTO mc_history (task_id, field, old_value, new_value, changed_by) VALUES (%s, 'archived', %s, %s, %s)",
        (task_id, Jsonb(not archived), Jsonb(archived), actor),
    )
    await emit(conn, kind="archived" if archived else "restored", task_id=task_id, actor=actor,
               payload={"task": _event_task(updated)})
    return updated


async def bulk_update(conn: AsyncConnection, *, where: BulkFilter, patch: TaskPatch, actor: str,
                      workflow: Workflow) -> list[Task]:
    clauses, params = ["archived_at IS NULL"], []
    if where.ids is not None:
        clauses.append("id = ANY(%s)")
        params.append(where.ids)
    for field in ("status", "assignee", "project"):
        value = getattr(where, field)
        if value is not None:
            clauses.append(f"{field} = %s")
            params.append(value)
    if len(clauses) == 1:
        raise ProblemError(422, "a bulk update needs a filter (ids, status, assignee or project)", slug="validation")
    rows = await (await conn.execute(
        f"SELECT id FROM mc_tasks WHERE {' AND '.join(clauses)} ORDER BY id FOR UPDATE", params)).fetchall()
    if where.ids is not None:
        missing = sorted(set(where.ids) - {row["id"] for row in rows})
        if missing:
            raise ProblemError(404, f"no such (unarchived) task(s): {', '.join(missing[:10])}; nothing was changed",
                               slug="task-not-found")
    updated = []
    for row in rows:
        task = await get_task(conn, task_id=row["id"])
        changes = _changes(task, patch)
        if "status" in changes:
            workflow.check(changes["status"][1])
        if "parent_id" in changes:
            await _check_parent(conn, parent_id=changes["parent_id"][1], task_id=task.id)
        updated.append(await _apply(conn, task=task, changes=changes, actor=actor, workflow=workflow)
                       if changes else task)
    return updated


# -- comments and history ------------------------------------------------------------------


async def add_comment(conn: AsyncConnection, *, task_id: str, body: str, actor: str) -> Comment:
    task = await get_task(conn, task_id=task_id)
    row = await (await conn.execute(
        "INSERT INTO mc_comments (task_id, author, body) VALUES (%s, %s, %s) "
        "RETURNING id, task_id, author, body, created_at", (task_id, actor, body))).fetchone()
    comment = Comment(**row)
    await emit(conn, kind="commented", task_id=task_id, actor=actor, payload={
        "task": _event_task(task), "comment": comment.model_dump(mode="json")})
    return comment


async def list_comments(conn: AsyncConnection, *, task_id: str) -> list[Comment]:
    await get_task(conn, task_id=task_id)
    rows = await (await conn.execute(
        "SELECT id, task_id, author, body, created_at FROM mc_comments WHERE task_id = %s ORDER BY id",
        (task_id,))).fetchall()
    return [Comment(**row) for row in rows]


async def list_history(conn: AsyncConnection, *, task_id: str, limit: int, cursor: str | None) -> HistoryPage:
    await get_task(conn, task_id=task_id)
    after = 0
    if cursor:
        try:
            after = int(cursor)
        except ValueError:
            raise ProblemError(400, "the cursor is not valid; start again without it", slug="bad-cursor") from None
    rows = await (await conn.execute(
        "SELECT id, task_id, field, old_value, new_value, changed_by, changed_at, source FROM mc_history "
        "WHERE task_id = %s AND id > %s ORDER BY id LIMIT %s", (task_id, after, limit + 1))).fetchall()
    items = [HistoryEntry(**row) for row in rows[:limit]]
    return HistoryPage(items=items, next_cursor=str(items[-1].id) if len(rows) > limit else None)


async def index_pending_search(conn: AsyncConnection, *, batch: int = 500) -> int:
    """Fills up to `batch` search vectors an import left NULL; returns how many.

    Rows locked by someone else are skipped (they get their turn next time), so this
    never waits on an API request. Neither `version` nor `updated_at` changes: the
    vector is derived data, not an edit.
    """
    cur = await conn.execute(
        """
        UPDATE mc_tasks SET search = mc_search_vector(title, description)
        WHERE id IN (SELECT id FROM mc_tasks WHERE search IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
        """, (batch,))
    return cur.rowcount


async def pending_search_count(conn: AsyncConnection) -> int:
    row = await (await conn.execute("SELECT count(*) AS n FROM mc_tasks WHERE search IS NULL")).fetchone()
    return row["n"] if isinstance(row, dict) else row[0]
