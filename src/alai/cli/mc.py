"""`alai mc`: Mission Control tasks from the terminal.

Writes that set one field (move, assign, done) read the task, then PATCH it with
If-Match; if someone changed it in between (412) they read and try once more, since
re-applying one field cannot undo anyone's work. `edit` never retries: it says the task
changed and lets the user look again. `create` sends one Idempotency-Key per run, so
its retry after a lost answer stores the task once.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import click

from alai.cli.output import client_for, console, local_time, print_json

STATUS_STYLE = {"todo": "cyan", "in_progress": "yellow", "blocked": "red", "review": "magenta", "done": "green",
                "cancelled": "dim"}
SORTS = ("updated_at", "-updated_at", "created_at", "-created_at", "priority", "-priority", "id")
SHOWN_IN_SHOW = 10

# -- pure helpers (tests/unit/test_mc_cli_format.py) ----------------------------------------

_ID = re.compile(r"^\s*(?:(?P<prefix>[a-z]+)-?)?(?P<number>\d+)\s*$", re.IGNORECASE)
_AGE = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_AGE_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def normalize_task_id(value: str) -> str | None:
    """`123`, `mc-123` and `MC123` are MC-123; None when it is not a task id."""
    match = _ID.match(value)
    if match is None:
        return None
    return f"{(match['prefix'] or 'MC').upper()}-{int(match['number'])}"


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`2h`, `30m`, `3d`, `1w` ago, or an ISO 8601 date/time (local time unless it has an offset)."""
    now = now or datetime.now(UTC)
    age = _AGE.match(value)
    if age:
        return now - timedelta(**{_AGE_UNITS[age[2].lower()]: int(age[1])})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is neither an age like 2h, 3d, 1w nor an ISO 8601 date/time") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive: the user's local time
    return moment.astimezone(UTC)


def match_status(value: str, statuses: Iterable[str]) -> str | None:
    """The workflow status the user meant: exact, or ignoring case and `-` for `_`."""
    statuses = list(statuses)
    if value in statuses:
        return value
    wanted = value.strip().lower().replace("-", "_").replace(" ", "_")
    return next((status for status in statuses if status.lower() == wanted), None)


def stale_message(task_id: str, current_version: Any) -> str:
    now = f"now version {current_version}" if current_version is not None else "it has a newer version"
    return f"{task_id} changed since you read it ({now}); run the command again"


def short_time(value: datetime, now: datetime | None = None) -> str:
    """Local time, as short as it can be: 14:03 today, 01-22 14:03 this year, else the date."""
    moment = value.astimezone()
    now = (now or datetime.now(UTC)).astimezone()
    if moment.date() == now.date():
        return moment.strftime("%H:%M")
    if moment.year == now.year:
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%Y-%m-%d")


def one_line(value: Any, width: int = 60) -> str:
    """A value from a task or its history, on one line for a table or a stream line."""
    if value is None:
        text = "-"
    elif isinstance(value, list):
        text = ", ".join(str(item) for item in value) or "[]"
    elif isinstance(value, dict):
        text = json.dumps(value, separators=(",", ":"), default=str)
    else:
        text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# -- parameters ----------------------------------------------------------------------------


class TaskIdParam(click.ParamType):
    name = "ID"

    def __init__(self, allow_none: bool = False) -> None:
        self.allow_none = allow_none

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | None:
        if self.allow_none and str(value).lower() in ("none", "-", ""):
            return None
        task_id = normalize_task_id(str(value))
        if task_id is None:
            self.fail(f"{value!r} is not a task id; use MC-123 or just 123", param, ctx)
        return task_id


class SinceParam(click.ParamType):
    name = "when"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_since(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class DueParam(click.ParamType):
    name = "date"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date | None:
        if isinstance(value, date) or value is None:
            return value
        if str(value).lower() in ("none", "-", ""):
            return None
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a date; use YYYY-MM-DD, or none to clear it", param, ctx)


TASK_ID = TaskIdParam()
PARENT_ID = TaskIdParam(allow_none=True)
PRIORITY = click.IntRange(0, 4)
json_option = click.option("--json", "as_json", is_flag=True, help="Print as JSON.")


def _read_text(value: str | None) -> str | None:
    """`-` means: read it from stdin."""
    return sys.stdin.read() if value == "-" else value


def _model(model: type, **fields: Any) -> dict[str, Any]:
    """A request body checked against the wire model first, so a bad value is a one-line error here."""
    from pydantic import ValidationError

    try:
        return model(**fields).model_dump(mode="json", exclude_unset=True)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise click.ClickException(f"{where}: {first['msg']}") from None


# -- API calls -------------------------------------------------------------------------------


def _statuses(client) -> list[str]:
    return list(client.get_json("/v1/mc/statuses")["statuses"])


def check_status(client, value: str) -> str:
    statuses = _statuses(client)
    status = match_status(value, statuses)
    if status is None:
        raise click.ClickException(f"unknown status {value!r}; use one of: {', '.join(statuses)}")
    return status


def _get_task(client, task_id: str):
    from alai.wire.mc import Task

    return Task.model_validate(client.get_json(f"/v1/mc/tasks/{task_id}"))


def _patch_task(client, task_id: str, body: dict[str, Any], version: int):
    """PATCH with If-Match; a stale version raises `_Stale` (the caller decides whether to retry)."""
    from alai.client import http
    from alai.wire.mc import Task

    try:
        response = client.request("PATCH", f"/v1/mc/tasks/{task_id}", json=body, headers={"If-Match": f'"{version}"'})
    except http.ApiError as error:
        if error.status == 412:
            raise _Stale((error.problem.model_extra or {}).get("current_version")) from None
        raise
    return Task.model_validate(response.json())


class _Stale(Exception):
    def __init__(self, current_version: Any) -> None:
        self.current_version = current_version


def _set_fields(client, task_id: str, **fields: Any):
    """(before, after) of setting a few fields; a task changed meanwhile is read again, once."""
    from alai.wire.mc import TaskPatch

    body = _model(TaskPatch, **fields)
    for attempt in (1, 2):
        before = _get_task(client, task_id)
        try:
            return before, _patch_task(client, task_id, body, before.version)
        except _Stale as stale:
            if attempt == 2:
                raise click.ClickException(stale_message(task_id, stale.current_version)) from None
    raise AssertionError("unreachable")


def _all_pages(client, path: str, params: dict[str, Any], page_model: type, follow: bool) -> tuple[list, str | None]:
    items: list = []
    cursor = None
    while True:
        page = page_model.model_validate(client.get_json(path, params={**params, "cursor": cursor}
                                                          if cursor else params))
        items.extend(page.items)
        cursor = page.next_cursor
        if not cursor or not follow:
            return items, cursor


def _history(client, task_id: str) -> list:
    from alai.wire.mc import HistoryPage

    items, _ = _all_pages(client, f"/v1/mc/tasks/{task_id}/history", {"limit": 500}, HistoryPage, follow=True)
    return items


# -- rendering --------------------------------------------------------------------------------


def output_console():
    """The console for people: no escape codes under NO_COLOR, no width to fit when piped."""
    if os.environ.get("NO_COLOR"):
        from rich.console import Console

        # NO_COLOR on a terminal: no escape codes at all (console() still sends bold and dim).
        out = Console(color_system=None, highlight=False, soft_wrap=False)
    else:
        out = console()
    if not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        out.width = 10_000  # piped: there is no terminal to fit, so titles are not cut
    return out


def _print_table(table: Any) -> None:
    out = output_console()
    with out.capture() as captured:
        out.print(table)
    # Rich pads every cell to its column's width; the last column's padding is noise.
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()), color=out.is_terminal or None)


def _status(status: str) -> str:
    from rich.markup import escape

    style = STATUS_STYLE.get(status)
    return f"[{style}]{escape(status)}[/{style}]" if style else escape(status)


def _task_table(tasks: list) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("ID", "STATUS", "PRI", "ASSIGNEE", "PROJECT", "UPDATED"):
        table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=20 if name in ("ASSIGNEE", "PROJECT")
                         else None)
    table.add_column("TITLE")  # the one column that gives way to the terminal's width
    for task in tasks:
        table.add_row(task.id, Text.from_markup(_status(task.status)), str(task.priority), Text(task.assignee or "-"),
                      Text(task.project or "-"), short_time(task.updated_at),
                      Text(" ".join(task.title.split()), no_wrap=True, overflow="ellipsis"))
    return table


def _describe(task) -> str:
    return f"{task.id} {task.status}" + (f" @{task.assignee}" if task.assignee else "")


def _print_change(task_id: str, before, after, as_json: bool, what: str, unchanged: str = "unchanged") -> None:
    if as_json:
        print_json(after.model_dump(mode="json"))
    else:
        click.echo(f"{task_id} {what if before.version != after.version else unchanged}")


# -- commands -----------------------------------------------------------------------------------


@click.group()
def mc() -> None:
    """Mission Control: the task tracker agents and people share.

    Task ids are MC-123 (123 and mc-123 work too). Tables are for people; every
    command that shows something has --json for programs. `alai mc watch` follows
    changes live.
    """


@mc.command("list")
@click.option("--status", "-s", "statuses", multiple=True, help="Only these statuses (repeat, or comma list).")
@click.option("--assignee", "-a", help="Only tasks assigned to this name.")
@click.option("--project", "-P", help="Only this project.")
@click.option("--label", "-l", help="Only tasks with this label.")
@click.option("--parent", type=TASK_ID, help="Only subtasks of this task.")
@click.option("-q", "--query", "query", help="Full-text search in titles and descriptions.")
@click.option("--since", type=SinceParam(), help="Updated since: ISO 8601 (local time) or an age like 2h, 3d, 1w.")
@click.option("--archived", "archived", flag_value="include", help="Include archived tasks.")
@click.option("--archived-only", "archived", flag_value="only", help="Only archived tasks.")
@click.option("--sort", type=click.Choice(SORTS), default="-updated_at", show_default=True, help="Order.")
@click.option("--limit", "-n", type=click.IntRange(1, 500), default=50, show_default=True,
              help="Tasks per page (one page unless --all-pages).")
@click.option("--all-pages", is_flag=True, help="Follow the pages to the end.")
@json_option
@click.pass_context
def list_tasks(ctx: click.Context, statuses: tuple[str, ...], assignee: str | None, project: str | None,
               label: str | None, parent: str | None, query: str | None, since: datetime | None,
               archived: str | None, sort: str, limit: int, all_pages: bool, as_json: bool) -> None:
    """List tasks, most recently updated first.

    --json prints a JSON array of tasks (every page with --all-pages). When more
    tasks match than were shown, a note on stderr says so.
    """
    from alai.wire.mc import TaskPage

    wanted = [part.strip() for value in statuses for part in value.split(",") if part.strip()]
    params: dict[str, Any] = {"sort": sort, "limit": limit, "archived": archived or "exclude"}
    for key, value in (("assignee", assignee), ("project", project), ("label", label), ("parent", parent),
                       ("q", query)):
        if value is not None:
            params[key] = value
    if since is not None:
        params["updated_since"] = since.isoformat()
    with client_for(ctx) as client:
        if wanted:
            params["status"] = ",".join(check_status(client, status) for status in wanted)
        tasks, next_cursor = _all_pages(client, "/v1/mc/tasks", params, TaskPage, follow=all_pages)
    if as_json:
        print_json([task.model_dump(mode="json") for task in tasks])
    elif tasks:
        _print_table(_task_table(tasks))
    else:
        click.echo("no tasks match", err=True)
    if next_cursor:
        click.echo(f"{len(tasks)} shown; more with --all-pages", err=True)


@mc.command()
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
@click.pass_context
def show(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Show a task: its fields, description, last comments and history.

    --json prints the task with all its `comments` and `history`.
    """
    from alai.wire.mc import Comment

    with client_for(ctx) as client:
        task = _get_task(client, task_id)
        comments = [Comment.model_validate(item) for item in client.get_json(f"/v1/mc/tasks/{task_id}/comments")]
        history = _history(client, task_id)
    if as_json:
        print_json({**task.model_dump(mode="json"), "comments": [c.model_dump(mode="json") for c in comments],
                    "history": [h.model_dump(mode="json") for h in history]})
        return
    _render_task(task, comments, history)


def _render_task(task, comments: list, history: list) -> None:
    from rich.markdown import Markdown
    from rich.markup import escape

    out = output_console()
    out.print(f"[bold]{task.id}[/bold]  {escape(task.title)}")
    rows = [
        ("status", _status(task.status) + (f"  (closed {local_time(task.closed_at)})" if task.closed_at else "")),
        ("priority", str(task.priority)),
        ("assignee", escape(task.assignee or "-")),
        ("project", escape(task.project or "-")),
        ("labels", escape(", ".join(task.labels) or "-")),
        ("parent", task.parent_id or "-"),
        ("due", task.due_date.isoformat() if task.due_date else "-"),
        ("created", f"{local_time(task.created_at)} by {escape(task.created_by)}"),
        ("updated", f"{local_time(task.updated_at)} (version {task.version})"),
    ]
    if task.archived_at:
        rows.append(("archived", f"[dim]{local_time(task.archived_at)}[/dim] (alai mc restore {task.id})"))
    if task.metadata:
        rows.append(("metadata", escape(one_line(task.metadata, 200))))
    for name, value in rows:
        out.print(f"  [dim]{name:<9}[/dim] {value}")
    if task.description:
        out.print()
        out.print(Markdown(task.description) if sys.stdout.isatty() else escape(task.description.rstrip()))
    if comments:
        out.print()
        shown = comments[-SHOWN_IN_SHOW:]
        more = f" (last {len(shown)} of {len(comments)})" if len(comments) > len(shown) else ""
        out.print(f"[bold]Comments[/bold]{more}")
        for comment in shown:
            out.print(f"  [dim]{local_time(comment.created_at)}[/dim] [bold]{escape(comment.author)}[/bold]")
            for line in comment.body.rstrip().splitlines() or [""]:
                out.print(f"    {escape(line)}")
    if history:
        out.print()
        shown = history[-SHOWN_IN_SHOW:]
        more = f" (last {len(shown)} of {len(history)}; all with `alai mc history {task.id}`)" \
            if len(history) > len(shown) else ""
        out.print(f"[bold]History[/bold]{more}")
        for entry in shown:
            out.print(f"  [dim]{local_time(entry.changed_at)}[/dim] {escape(entry.changed_by)}  "
                      f"{escape(_history_change(entry))}")


def _history_change(entry) -> str:
    if entry.field == "created":
        return "created"
    if entry.field == "description":
        return "description changed"
    return f"{entry.field}: {one_line(entry.old_value, 40)} → {one_line(entry.new_value, 40)}"


@mc.command()
@click.argument("title")
@click.option("--description", "-d", help="Markdown; - reads it from stdin.")
@click.option("--status", "-s", help="Initial status (default: the workflow's first).")
@click.option("--priority", "-p", type=PRIORITY, default=2, show_default=True, help="0 (highest) to 4.")
@click.option("--assignee", "-a", help="Who works on it.")
@click.option("--project", "-P", help="Project name.")
@click.option("--label", "-l", "labels", multiple=True, help="A label (repeat for more).")
@click.option("--parent", type=TASK_ID, help="The task this one is part of.")
@click.option("--due", type=DueParam(), help="Due date, YYYY-MM-DD.")
@json_option
@click.pass_context
def create(ctx: click.Context, title: str, description: str | None, status: str | None, priority: int,
           assignee: str | None, project: str | None, labels: tuple[str, ...], parent: str | None,
           due: date | None, as_json: bool) -> None:
    """Create a task and print its id.

    Piped, only the id is printed, so a script can keep it:
    `id=$(alai mc create "Fix the login page" -a bob)`.
    """
    import uuid

    from alai.client import http
    from alai.wire.mc import Task, TaskCreate

    fields: dict[str, Any] = {"title": title, "priority": priority, "labels": list(labels)}
    for key, value in (("description", _read_text(description)), ("assignee", assignee), ("project", project),
                       ("parent_id", parent), ("due_date", due)):
        if value is not None:
            fields[key] = value
    key = str(uuid.uuid4())
    with client_for(ctx) as client:
        if status is not None:
            fields["status"] = check_status(client, status)
        body = _model(TaskCreate, **fields)
        try:
            response = client.request("POST", "/v1/mc/tasks", json=body, headers={"Idempotency-Key": key})
        except http.ServerUnreachable:
            time.sleep(1.0)  # the answer may be what was lost: the same key makes this retry safe
            response = client.request("POST", "/v1/mc/tasks", json=body, headers={"Idempotency-Key": key})
    task = Task.model_validate(response.json())
    if as_json:
        print_json(task.model_dump(mode="json"))
    elif sys.stdout.isatty():
        click.echo(f"created {task.id} ({task.status}): {task.title}")
    else:
        click.echo(task.id)


@mc.command()
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.option("--title", "-t", help="New title.")
@click.option("--description", "-d", help="New description (markdown); - reads it from stdin; '' clears it.")
@click.option("--editor", "-e", is_flag=True, help="Edit the description in $EDITOR.")
@click.option("--priority", "-p", type=PRIORITY, help="0 (highest) to 4.")
@click.option("--project", "-P", help="New project; '' clears it.")
@click.option("--label", "-l", "add_labels", multiple=True, help="Add a label (repeat for more).")
@click.option("--unlabel", "remove_labels", multiple=True, help="Remove a label (repeat for more).")
@click.option("--clear-labels", is_flag=True, help="Remove every label first (with --label: replace them).")
@click.option("--parent", type=PARENT_ID, help="New parent task, or none.")
@click.option("--due", type=DueParam(), help="Due date YYYY-MM-DD, or none.")
@click.option("--if-version", type=int, help="Only if the task is still at this version (as `show` printed it).")
@json_option
@click.pass_context
def edit(ctx: click.Context, task_id: str, title: str | None, description: str | None, editor: bool,
         priority: int | None, project: str | None, add_labels: tuple[str, ...], remove_labels: tuple[str, ...],
         clear_labels: bool, parent: str | None, due: date | None, if_version: int | None, as_json: bool) -> None:
    """Change a task's title, description, priority, project, labels, parent or due date.

    If someone changed the task since it was read (or since --if-version), nothing
    is changed and the command says so: look at it again and re-run.
    """
    from click.core import ParameterSource

    from alai.wire.mc import TaskPatch

    parent_given = ctx.get_parameter_source("parent") == ParameterSource.COMMANDLINE
    due_given = ctx.get_parameter_source("due") == ParameterSource.COMMANDLINE
    if not any((title, description is not None, editor, priority is not None, project is not None, add_labels,
                remove_labels, clear_labels, parent_given, due_given)):
        raise click.UsageError("nothing to change; give at least one option (see `alai mc edit --help`)")
    with client_for(ctx) as client:
        before = _get_task(client, task_id)
        fields: dict[str, Any] = {}
        if title is not None:
            fields["title"] = title
        if description is not None:
            fields["description"] = _read_text(description) or None
        if editor:
            edited = click.edit(fields.get("description") or before.description or "", extension=".md")
            if edited is not None:
                fields["description"] = edited.rstrip() + "\n" if edited.strip() else None
        if priority is not None:
            fields["priority"] = priority
        if project is not None:
            fields["project"] = project or None
        if add_labels or remove_labels or clear_labels:
            labels = [] if clear_labels else list(before.labels)
            labels += [label for label in add_labels if label not in labels]
            fields["labels"] = [label for label in labels if label not in remove_labels]
        if parent_given:
            fields["parent_id"] = parent
        if due_given:
            fields["due_date"] = due
        body = _model(TaskPatch, **fields)
        try:
            after = _patch_task(client, task_id, body, if_version if if_version is not None else before.version)
        except _Stale as stale:
            raise click.ClickException(stale_message(task_id, stale.current_version)) from None
    changed = [field for field in body if getattr(before, field) != getattr(after, field)]
    _print_change(task_id, before, after, as_json, "changed " + ", ".join(changed) if changed else "")


@mc.command()
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.argument("status")
@json_option
@click.pass_context
def move(ctx: click.Context, task_id: str, status: str, as_json: bool) -> None:
    """Set a task's status; an unknown STATUS fails with the list of the workflow's statuses."""
    with client_for(ctx) as client:
        status = check_status(client, status)
        before, after = _set_fields(client, task_id, status=status)
    _print_change(task_id, before, after, as_json, f"{before.status} → {after.status}", f"is already {after.status}")


@mc.command()
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.argument("who", required=False)
@click.option("--none", "unassign", is_flag=True, help="Unassign (same as WHO = -).")
@json_option
@click.pass_context
def assign(ctx: click.Context, task_id: str, who: str | None, unassign: bool, as_json: bool) -> None:
    """Assign a task to WHO; `-` or --none unassigns it."""
    if unassign or who == "-":
        who = None
    elif not who:
        raise click.UsageError("say who: `alai mc assign MC-1 bob`, or --none to unassign")
    with client_for(ctx) as client:
        before, after = _set_fields(client, task_id, assignee=who)
    _print_change(task_id, before, after, as_json, f"assignee {before.assignee or '-'} → {after.assignee or '-'}",
                  f"is already assigned to {after.assignee}" if after.assignee else "is already unassigned")


@mc.command()
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
@click.pass_context
def done(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Mark a task done."""
    with client_for(ctx) as client:
        before, after = _set_fields(client, task_id, status="done")
    _print_change(task_id, before, after, as_json, f"{before.status} → {after.status}", f"is already {after.status}")


@mc.command()
@click.argument("task_id", metavar="ID", type=TASK_ID)
@click.argument("text", required=False)
@json_option
@click.pass_context
def comment(ctx: click.Context, task_id: str, text: str | None, as_json: bool) -> None:
    """Add a comment (markdown) to a task.

    TEXT `-`, or no TEXT with stdin not a terminal, reads it from stdin; no TEXT
    on a terminal opens $EDITOR.
    """
    from alai.wire.mc import Comment, CommentCreate

    if text == "-" or (text is None and not sys.stdin.isatty()):
        text = sys.stdin.read()
    elif text is None:
        text = click.edit("", extension=".md") or ""
    if not text.strip():
        raise click.ClickException("the comment is empty; nothing was posted")
    body = _model(CommentCreate, body=text.rstrip("\n"))
    with client_for(ctx) as client:
        posted = Comment.model_validate(client.request("POST", f"/v1/mc/tasks/{task_id}/comments", json=body).json())
    if as_json:
        print_json(posted.model_dump(mode="json"))
    else:
        click.echo(f"{task_id} commented (#{posted.id})")


@mc.command()
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
@click.pass_context
def archive(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Archive a task: it leaves lists (`list --archived` shows it); nothing is deleted."""
    _archive_or_restore(ctx, task_id, "archive", as_json)


@mc.command()
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
@click.pass_context
def restore(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Bring an archived task back."""
    _archive_or_restore(ctx, task_id, "restore", as_json)


def _archive_or_restore(ctx: click.Context, task_id: str, action: str, as_json: bool) -> None:
    from alai.wire.mc import Task

    with client_for(ctx) as client:
        task = Task.model_validate(client.request("POST", f"/v1/mc/tasks/{task_id}/{action}").json())
    if as_json:
        print_json(task.model_dump(mode="json"))
    else:
        click.echo(f"{task_id} {'archived' if task.archived_at else 'restored'}")


@mc.command()
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
@click.pass_context
def history(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """Every change of a task: when, who, and old → new."""
    from rich.table import Table
    from rich.text import Text

    with client_for(ctx) as client:
        entries = _history(client, task_id)
    if as_json:
        print_json([entry.model_dump(mode="json") for entry in entries])
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("WHEN", "WHO", "SOURCE"):
        table.add_column(name, no_wrap=True)
    table.add_column("CHANGE")
    for entry in entries:
        table.add_row(local_time(entry.changed_at), Text(entry.changed_by), Text(entry.source),
                      Text(_history_change(entry), no_wrap=True, overflow="ellipsis"))
    _print_table(table)


# `watch` lives in its own module; importing it attaches it to `mc`.
from alai.cli import mc_watch  # noqa: E402,F401
