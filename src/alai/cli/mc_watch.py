"""`alai mc watch`: task changes live, from the server's event stream."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from alai.cli.mc import check_status, mc, one_line, output_console
from alai.cli.output import client_for

KIND_STYLE = {"created": "green", "updated": "yellow", "commented": "cyan", "archived": "dim", "restored": "blue"}
EVENTS_STREAM_PATH = "/v1/mc/events/stream"
# Fetched before each connection: it renews an expiring login and turns a refused
# token or a down server into the client's usual one-line error.
PROBE_PATH = "/v1/mc/statuses"
STREAM_READ_TIMEOUT = 45.0  # three missed keep-alives (sent every 15 s): the connection is dead


def summarize_changes(changes: dict[str, Any] | None) -> str:
    """`status: todo → done; assignee: - → bob` from an event's {field: [old, new]}."""
    if not changes:
        return ""
    parts = []
    for field, pair in changes.items():
        old, new = pair if isinstance(pair, (list, tuple)) and len(pair) == 2 else (None, pair)
        if field == "description":
            parts.append("description changed")
        else:
            parts.append(f"{field}: {one_line(old, 30)} → {one_line(new, 30)}")
    return "; ".join(parts)


def format_event(kind: str, data: str, now: datetime | None = None) -> str:
    """One rich-markup line for a person: time, kind, task, actor, what changed."""
    from pydantic import ValidationError
    from rich.markup import escape

    from alai.wire.mc import Event

    try:
        event = Event.model_validate_json(data)
    except ValidationError:  # a kind this CLI does not know yet
        raw = json.loads(data) if data.startswith("{") else {}
        return f"{escape(kind)} {escape(str(raw.get('task_id', '?')))}"
    moment = event.at.astimezone()
    today = moment.date() == (now or datetime.now(UTC)).astimezone().date()
    when = moment.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S")
    style = KIND_STYLE.get(event.kind, "")
    task = event.task
    if event.kind == "updated":
        what = summarize_changes(event.changes)
    elif event.kind == "commented" and event.comment is not None:
        what = one_line(event.comment.body, 80)
    else:
        what = one_line(task.title, 80) if task else ""
        if event.kind == "created" and task is not None:
            what = f"{task.status}: {what}"
    return (f"[dim]{when}[/dim] [{style}]{event.kind:<9}[/{style}] [bold]{event.task_id}[/bold] "
            f"{escape(event.actor)}  {escape(what)}")


@mc.command()
@click.option("--status", "-s", "statuses", multiple=True, help="Only tasks in these statuses (repeat or comma list).")
@click.option("--assignee", "-a", help="Only tasks assigned to this name.")
@click.option("--project", "-P", help="Only this project.")
@click.option("--since-id", metavar="ID", help="Start after this event id or position (0: replay everything).")
@click.option("--json", "as_json", is_flag=True, help="Each event as the API sends it, one per line (JSON Lines).")
@click.pass_context
def watch(ctx: click.Context, statuses: tuple[str, ...], assignee: str | None, project: str | None,
          since_id: str | None, as_json: bool) -> None:
    """Follow changes to tasks live, one line per event, until Ctrl-C.

    A dropped connection is resumed after the last event received (Last-Event-ID),
    retrying every 0.5 s up to every 10 s; the attempts are reported on stderr.
    """
    from alai.client import sse

    params = {key: value for key, value in (("assignee", assignee), ("project", project)) if value is not None}
    wanted = [part.strip() for value in statuses for part in value.split(",") if part.strip()]

    def connected() -> None:
        click.echo(f"watching {client.profile.server} (Ctrl-C to stop)", err=True)

    def retrying(reason: str, delay: float) -> None:
        click.echo(f"connection lost ({reason}); reconnecting in {delay:g} s", err=True)

    out = None if as_json else output_console()
    try:
        with client_for(ctx) as client:
            if wanted:
                params["status"] = ",".join(check_status(client, status) for status in wanted)
            for kind, data in sse.follow(client, EVENTS_STREAM_PATH, params=params, last_id=since_id,
                                         read_timeout=STREAM_READ_TIMEOUT, probe_path=PROBE_PATH,
                                         on_connect=connected, on_retry=retrying):
                if as_json:
                    click.echo(data)
                else:
                    out.print(format_event(kind, data), soft_wrap=True)
    except KeyboardInterrupt:
        pass
