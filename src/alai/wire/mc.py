"""Mission Control: tasks, comments, history, change events, bulk updates, import reports."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TITLE_MAX = 500
DESCRIPTION_MAX = 200_000
COMMENT_MAX = 100_000
LABEL_MAX = 64
NAME_MAX = 200

EventKind = Literal["created", "updated", "commented", "archived", "restored"]


class Task(BaseModel):
    id: str
    title: str
    description: str | None = None
    status: str
    priority: int
    assignee: str | None = None
    project: str | None = None
    labels: list[str] = Field(default_factory=list)
    parent_id: str | None = None
    due_date: date | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None
    archived_at: datetime | None = None
    created_by: str
    version: int


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=TITLE_MAX)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)
    status: str | None = None  # default: the workflow's first status
    priority: int = Field(default=2, ge=0, le=4)
    assignee: str | None = Field(default=None, max_length=NAME_MAX)
    project: str | None = Field(default=None, max_length=NAME_MAX)
    labels: list[str] = Field(default_factory=list, max_length=50)
    parent_id: str | None = None
    due_date: date | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class TaskPatch(BaseModel):
    """Fields to change; absent fields stay as they are, null clears a nullable field."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=TITLE_MAX)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)
    status: str | None = None
    priority: int | None = Field(default=None, ge=0, le=4)
    assignee: str | None = Field(default=None, max_length=NAME_MAX)
    project: str | None = Field(default=None, max_length=NAME_MAX)
    labels: list[str] | None = Field(default=None, max_length=50)
    parent_id: str | None = None
    due_date: date | None = None
    metadata: dict[str, Any] | None = None


class TaskPage(BaseModel):
    items: list[Task]
    next_cursor: str | None = None


class Comment(BaseModel):
    id: int
    task_id: str
    author: str
    body: str
    created_at: datetime


class CommentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=COMMENT_MAX)


class HistoryEntry(BaseModel):
    id: int
    task_id: str
    field: str
    old_value: Any = None
    new_value: Any = None
    changed_by: str
    changed_at: datetime
    source: str


class HistoryPage(BaseModel):
    items: list[HistoryEntry]
    next_cursor: str | None = None


class BulkFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(default=None, max_length=5000)
    status: str | None = None
    assignee: str | None = None
    project: str | None = None


class BulkUpdate(BaseModel):
    """Apply `set` to every task matching `where` (ids and/or field filters), all or nothing."""

    model_config = ConfigDict(extra="forbid")

    where: BulkFilter
    set: TaskPatch


class BulkResult(BaseModel):
    updated: int
    ids: list[str]


class Event(BaseModel):
    """One change, as the stream sends it.

    `position` ("<tx>-<id>") is where a client resumes from (SSE `id:`, `?after=`);
    `id` is the change's number, also accepted as `after` for people.
    """

    id: int
    position: str
    kind: EventKind
    task_id: str
    actor: str
    at: datetime
    task: Task | None = None
    comment: Comment | None = None
    changes: dict[str, Any] | None = None


class ImportTableReport(BaseModel):
    table: str
    rows_read: int
    rows_written: int
    rows_with_problems: int


class ImportReport(BaseModel):
    source: str
    source_sha256: str
    dry_run: bool
    already_imported: bool = False
    tables: list[ImportTableReport]
    status_map: dict[str, str]
    priority_map: dict[str, int]
    column_map: dict[str, str]
    warnings: list[str] = Field(default_factory=list)
    duration_seconds: float
