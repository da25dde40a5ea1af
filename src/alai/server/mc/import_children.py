"""Legacy comments and history entries as mc_comments and mc_history rows.

A comment or history entry can only be written if its task exists; which tasks
exist is decided later (`Plan.resolve`), so these are candidates until then.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from alai.server.mc import import_values as values
from alai.server.mc.import_source import SourceTable
from alai.wire.mc import COMMENT_MAX


@dataclass
class SourceRow:
    """One source row as mc_import_rows keeps it (its data is encoded as it is written)."""

    table: str
    key: str
    problems: list[str] = field(default_factory=list)
    target_id: str | None = None


@dataclass
class ChildCandidate:
    """A comment or a history entry: written only if its task exists."""

    task_id: str | None
    values: tuple
    source: SourceRow
    write: bool = False

    @property
    def identity(self) -> tuple:
        """What makes two rows the same comment or the same change (as `_existing_children`
        reads them back); asked for only when the database holds some already."""
        if len(self.values) == 3:  # a comment: author, body, created_at
            return (self.task_id, *self.values)
        field_name, old, new, changed_by, changed_at, _ = self.values
        return (self.task_id, field_name, _canonical_text(old), _canonical_text(new), changed_by, changed_at)


def canonical_json(value: Any) -> str | None:
    """A JSON value as text that compares equal however jsonb ordered its keys."""
    if value is None:
        return None
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()
    except TypeError:  # integers beyond 64 bits
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def _canonical_text(text: str | None) -> str | None:
    return None if text is None else canonical_json(values.parse_json(text)[0])


def _reader(columns: dict[str, str], names: list[str]) -> Callable[[tuple, str], Any]:
    position = {target: names.index(column) for target, column in columns.items()}
    return lambda row, target: row[position[target]] if target in position else None


def _name(value: Any) -> str:
    return (values.clean_text(value)[0] or "").strip() or values.FALLBACK_ACTOR


def _when(raw: Any, problems: list[str], what: str) -> datetime:
    moment, problem = values.parse_timestamp(raw)
    if moment is None:
        problems.append(f"{what}: {problem}; imported as now" if problem else f"no {what}; imported as now")
        return datetime.now(UTC)
    return moment


def comments(source: SourceTable, outs: list[SourceRow], columns: dict[str, str],
             prefix: str) -> Iterator[ChildCandidate]:
    get = _reader(columns, source.columns)
    for row, out in zip(source.rows, outs, strict=True):
        problems = out.problems
        body, problem = values.clean_text(get(row, "body"))
        if problem:
            problems.append(f"body: {problem}")
        if not body or not body.strip():
            body = "(empty comment)"
            problems.append("empty comment; imported as '(empty comment)'")
        elif len(body) > COMMENT_MAX:
            body = body[:COMMENT_MAX]
            problems.append(f"body longer than {COMMENT_MAX} characters; cut")
        author = _name(get(row, "author"))
        created = _when(get(row, "created_at"), problems, "created_at")
        task_id = values.task_key(get(row, "task_id"), prefix)
        yield ChildCandidate(task_id, (author, body, created), out)


def history(source: SourceTable, outs: list[SourceRow], columns: dict[str, str], prefix: str, *,
            field_names: dict[str, str], status_map: dict[str, str]) -> Iterator[ChildCandidate]:
    get = _reader(columns, source.columns)
    for row, out in zip(source.rows, outs, strict=True):
        problems = out.problems
        source_field = (values.clean_text(get(row, "field"))[0] or "").strip()
        if not source_field:
            source_field = "(unknown)"
            problems.append("no field name; imported as '(unknown)'")
        target_field = field_names.get(source_field, source_field)
        old, new = (_history_value(target_field, get(row, name), status_map) for name in ("old_value", "new_value"))
        changed_by = _name(get(row, "changed_by"))
        changed_at = _when(get(row, "changed_at"), problems, "changed_at")
        old_json, new_json = (None if v is None else values.to_json(v) for v in (old, new))
        task_id = values.task_key(get(row, "task_id"), prefix)
        yield ChildCandidate(task_id, (target_field, old_json, new_json, changed_by, changed_at, "import"), out)


def _history_value(target_field: str, raw: Any, status_map: dict[str, str]) -> Any:
    """A legacy old/new value as JSON, in the terms the task now uses."""
    if raw is None:
        return None
    if target_field == "status" and str(raw) in status_map:
        return status_map[str(raw)]
    if target_field == "priority":
        return values.guess_priority(raw)[0]
    if target_field == "labels":
        return values.parse_labels(raw)[0]
    if isinstance(raw, str) and raw[:1] in ("[", "{"):
        parsed, ok = values.parse_json(raw)
        if ok:
            return parsed
    value = values.jsonable(raw)
    return values.clean_text(value)[0] if isinstance(value, str) else value
