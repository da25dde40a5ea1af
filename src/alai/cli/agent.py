"""`alai agent`: agent definitions, and runs — start one and follow it, logs, cancel, result.

`run` sends one Idempotency-Key per invocation (a retry after a lost answer stores one
run), then follows the run's event stream (`sse.follow`: reconnects and resumes after
the last event seen) until its final `state` event: model output goes to stdout as it
arrives, state changes to stderr. Ctrl-C while following cancels the run. Events are
keyed by id, so a stream that repeats itself after a resume prints nothing twice.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from alai.cli.mc import TASK_ID, _print_table, one_line, output_console, short_time
from alai.cli.output import client_for, local_time, print_json
from alai.wire.runs import (
    AGENT_NAME_PATTERN,
    DEFINITION_MAX_BYTES,
    FINAL_STATES,
    TIMEOUT_MAX_SECONDS,
    TIMEOUT_MIN_SECONDS,
)

RUNS, AGENTS = "/v1/runs", "/v1/agents"
STATES = ("queued", "waiting", "running", "succeeded", "failed", "cancelled", "timed_out")
STATE_STYLE = {"queued": "cyan", "waiting": "yellow", "running": "blue", "succeeded": "green", "failed": "red",
               "cancelled": "dim", "timed_out": "red"}
STREAM_READ_TIMEOUT = 45.0  # three missed keep-alives (sent every 15 s): the connection is dead
EVENTS_PAGE = 500
RUNS_PAGE = 100

# -- pure helpers (tests/unit/test_agent_cli_format.py) ----------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(secs|sec|s|mins|min|m|hrs|hr|h|d)?")
_UNIT_SECONDS = {"s": 1, "sec": 1, "secs": 1, "m": 60, "min": 60, "mins": 60, "h": 3600, "hr": 3600, "hrs": 3600,
                 "d": 86400}
_RUN_ID = re.compile(r"^\s*(?:#|run-?)?(\d+)\s*$", re.IGNORECASE)


def parse_duration(text: str) -> int:
    """`90s`, `10m`, `1h`, `1h30m`, `1.5h` or plain seconds (`600`), as whole seconds within the API's bounds."""
    compact = text.strip().lower().replace(" ", "")
    bad = ValueError(f"{text!r} is not a duration; use 90s, 10m, 1h, 1h30m or seconds")
    position, total = 0, 0.0
    while position < len(compact):
        match = _DURATION.match(compact, position)
        # A number without a unit only on its own (600): 1h30 could mean minutes or seconds.
        if match is None or (match[2] is None and (position > 0 or match.end() < len(compact))):
            raise bad
        total += float(match[1]) * _UNIT_SECONDS[match[2] or "s"]
        position = match.end()
    if not compact:
        raise bad
    seconds = round(total)
    if not TIMEOUT_MIN_SECONDS <= seconds <= TIMEOUT_MAX_SECONDS:
        raise ValueError(f"{text!r} is out of range: a timeout is {TIMEOUT_MIN_SECONDS} s to "
                         f"{TIMEOUT_MAX_SECONDS // 3600} h")
    return seconds


def format_seconds(seconds: float) -> str:
    """3725 → 1h2m5s, 600 → 10m, 4.25 → 4.2s: how long something took or may take."""
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds % 1 else f"{int(seconds)}s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if value)


def parse_run_id(value: str) -> int | None:
    """`42`, `#42` and `run-42` are run 42; None when it is not a run id."""
    match = _RUN_ID.match(value)
    return int(match[1]) if match else None


def is_final(event) -> bool:
    """The run's last event: a `state` event into succeeded, failed, cancelled or timed_out."""
    return event.kind == "state" and event.data.get("state") in FINAL_STATES


def describe_state(data: dict[str, Any], attempt: int = 0) -> str:
    """`waiting: no online node has model:x`, `running on anvil (attempt 2 of 3)`, `failed: …`."""
    state = str(data.get("state") or "?")
    reason = data.get("reason") or data.get("error")
    text = state.replace("_", " ")
    if state == "running":
        node = data.get("node")
        text += f" on {node}" if node else ""
        attempt = int(data.get("attempt") or attempt or 0)
        if attempt:
            limit = data.get("max_attempts")
            text += f" (attempt {attempt} of {limit})" if limit else f" (attempt {attempt})"
        if data.get("cancel_requested"):
            text += ", cancel requested" + (f" by {data['by']}" if data.get("by") else "")
    if reason and str(reason).strip().lower() not in (state, text):  # "cancelled: cancelled" says nothing more
        text += f": {one_line(reason, 200)}"
    return text


def describe_event(event) -> str:
    """One line for any event but output: what happened, without the time."""
    data = event.data
    if event.kind == "state":
        return describe_state(data, event.attempt)
    if event.kind == "tool_call":
        name = data.get("name") or data.get("tool") or "tool"
        arguments = data.get("arguments", data.get("input", data.get("args")))
        return f"{name}({one_line(arguments, 120) if arguments is not None else ''})"
    if event.kind == "usage":
        return ", ".join(f"{key} {value:,}" if isinstance(value, int) else f"{key} {one_line(value, 40)}"
                         for key, value in data.items()) or "-"
    if event.kind == "log":
        text = next((data[key] for key in ("text", "message", "line") if isinstance(data.get(key), str)), None)
        return one_line(text if text is not None else data, 300)
    if event.kind == "outcome":
        outcome = str(data.get("outcome") or data.get("state") or "?")
        return outcome + (f": {one_line(data['error'], 200)}" if data.get("error") else "")
    if event.kind == "output":
        return one_line(data.get("text", ""), 300)
    return one_line(data, 300)


def event_time(moment: datetime, now: datetime | None = None) -> str:
    """Local time: HH:MM:SS today, else with the date."""
    local = moment.astimezone()
    today = local.date() == (now or datetime.now(UTC)).astimezone().date()
    return local.strftime("%H:%M:%S" if today else "%Y-%m-%d %H:%M:%S")


def failure_message(run_id: int, state: str, reason: str | None, timeout_seconds: int | None = None) -> str:
    """The one line `run` and `result` end with when a run did not succeed."""
    reason = one_line(reason, 300) if reason else None
    if state == "timed_out":
        if reason and reason.startswith("timed out"):  # the server's own: "timed out after 600 s on anvil"
            return f"run {run_id} {reason}"
        text = f"run {run_id} timed out" + (f" after {format_seconds(timeout_seconds)}" if timeout_seconds else "")
    elif state == "cancelled":
        if reason and reason.startswith("cancelled"):  # "cancelled by alice"
            return f"run {run_id} was {reason}"
        text = f"run {run_id} was cancelled"
    else:
        text = f"run {run_id} {state.replace('_', ' ')}"
    return text + (f": {reason}" if reason else "")


def front_matter_name(text: str) -> str | None:
    """The `name:` of a definition's YAML front matter (top level, quotes removed); None without one.

    Read line by line: the client does not carry a YAML parser, and the server parses
    the whole front matter anyway; only the name is needed here, for the URL.
    """
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:]:
        if line.strip() in ("---", "..."):
            return None
        match = re.match(r"^name\s*:\s*(.*?)\s*$", line)
        if match:
            value = re.sub(r"\s+#.*$", "", match[1])
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            return value or None
    return None


def relative_time(moment: datetime, now: datetime | None = None) -> str:
    """`12s ago`, `5m ago`, `3h ago` within a day, else the local date and time."""
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    if seconds < 0:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return local_time(moment)


def state_markup(state: str) -> str:
    from rich.markup import escape

    style = STATE_STYLE.get(state)
    return f"[{style}]{escape(state)}[/{style}]" if style else escape(state)


# -- parameters -------------------------------------------------------------------------------------


class DurationParam(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class RunIdParam(click.ParamType):
    name = "RUN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        run_id = parse_run_id(str(value))
        if run_id is None:
            self.fail(f"{value!r} is not a run id; use the number `alai agent runs` shows, e.g. 42", param, ctx)
        return run_id


RUN_ID = RunIdParam()
json_option = click.option("--json", "as_json", is_flag=True, help="Print as JSON.")


def _stderr_color() -> bool:
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def _stdout_color() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _request_body(wire_model: type, fields: dict[str, Any]) -> dict[str, Any]:
    """Checked against the wire model first, so a bad value is a one-line error here. (mc's `_model`
    cannot take a field called `model`, which RunCreate has.)"""
    from pydantic import ValidationError

    try:
        return wire_model(**fields).model_dump(mode="json", exclude_unset=True)
    except ValidationError as error:
        first = error.errors()[0]
        raise click.ClickException(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def _read_input(value: str | None) -> str:
    """INPUT itself; `-`, or nothing with stdin not a terminal, reads stdin; else no input."""
    if value == "-" or (value is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    return value or ""

def _cancel_message(run) -> str:
    if run.state == "cancelled":
        return f"run {run.id} cancelled"
    return f"run {run.id}: cancel requested; it stops on {run.node or 'its node'} shortly"


# -- commands --------------------------------------------------------------------------------------------


@click.group()
def agent() -> None:
    """Agents and their runs.

    An agent is a Markdown file with YAML front matter (name, description, model,
    tools …) and its system prompt as body — the files Claude Code reads from
    ~/.claude/agents/. `alai agent put` registers them; `alai agent run NAME "input"`
    runs one on a capable worker and streams its output. Runs are numbers (42).
    """


@agent.command()
@click.argument("run_id", metavar="RUN", type=RUN_ID)
@json_option
@click.pass_context
def cancel(ctx: click.Context, run_id: int, as_json: bool) -> None:
    """Cancel a run.

    A queued or waiting run is cancelled at once; a running one as soon as its worker
    hears of it (its next heartbeat), which aborts the model call or kills the command.
    """
    from alai.wire.runs import Run

    with client_for(ctx) as client:
        cancelled = Run.model_validate(client.request("POST", f"{RUNS}/{run_id}/cancel").json())
    if as_json:
        print_json(cancelled.model_dump(mode="json"))
    else:
        click.echo(_cancel_message(cancelled))


@agent.command()
@click.argument("run_id", metavar="RUN", type=RUN_ID)
@json_option
@click.pass_context
def status(ctx: click.Context, run_id: int, as_json: bool) -> None:
    """Show one run in detail: state and why, node, attempts, times."""
    from rich.markup import escape

    from alai.wire.runs import Run

    with client_for(ctx) as client:
        found = Run.model_validate(client.get_json(f"{RUNS}/{run_id}"))
    if as_json:
        print_json(found.model_dump(mode="json"))
        return
    out = output_console()
    state = state_markup(found.state) + (" [yellow](cancel requested)[/yellow]" if found.cancel_requested
                                         and found.state not in FINAL_STATES else "")
    if found.reason:
        state += f"  {escape(one_line(found.reason, 200))}"
    took = None
    if found.started_at:
        took = ((found.finished_at or datetime.now(UTC)) - found.started_at).total_seconds()
    rows = [
        ("state", state),
        ("agent", f"{escape(found.agent)} v{found.agent_version} ({found.executor})"),
        ("model", escape(found.model or "-")),
        ("requires", escape(", ".join(found.requires) or "-")),
        ("task", found.task_id or "-"),
        ("node", escape(found.node or "-")),
        ("attempt", f"{found.attempt} of {found.max_attempts}"),
        ("priority", str(found.priority)),
        ("timeout", format_seconds(found.timeout_seconds)),
        ("created", f"{local_time(found.created_at)} by {escape(found.created_by)}"),
        ("started", local_time(found.started_at)),
        ("finished", local_time(found.finished_at) + (f" (took {format_seconds(took)})" if found.finished_at
                                                        and took is not None else "")),
    ]
    if found.lease_expires_at and found.state == "running":
        rows.append(("lease", f"until {local_time(found.lease_expires_at)}"))
    out.print(f"[bold]run {found.id}[/bold]")
    for label, value in rows:
        out.print(f"  [dim]{label:<9}[/dim] {value}")


@agent.command("runs")
@click.option("--agent", "-a", "agent_name", help="Only runs of this agent.")
@click.option("--state", "-s", "states", multiple=True, help="Only runs in these states (repeat, or comma list).")
@click.option("--task", "task_id", type=TASK_ID, help="Only runs for this Mission Control task.")
@click.option("--node", help="Only runs on (or last on) this node.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many.")
@json_option
@click.pass_context
def list_runs(ctx: click.Context, agent_name: str | None, states: tuple[str, ...], task_id: str | None,
              node: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first.

    A table of id, agent, state, node, attempt, created (local time) and reason.
    """
    from rich.table import Table
    from rich.text import Text

    from alai.wire.runs import RunPage

    wanted = [part.strip().lower().replace("-", "_").replace(" ", "_") for value in states
              for part in value.split(",") if part.strip()]
    unknown = [state for state in wanted if state not in STATES]
    if unknown:
        raise click.UsageError(f"unknown state {unknown[0]!r}; use one of: {', '.join(STATES)}")
    params: dict[str, Any] = {key: value for key, value in (("agent", agent_name), ("task_id", task_id),
                                                             ("node", node)) if value is not None}
    if wanted:
        params["state"] = wanted
    items: list = []
    cursor: str | None = None
    with client_for(ctx) as client:
        while len(items) < limit:
            page_params = {**params, "limit": min(RUNS_PAGE, limit - len(items)), **({"cursor": cursor} if cursor
                                                                                       else {})}
            page = RunPage.model_validate(client.get_json(RUNS, params=page_params))
            items += page.items
            cursor = page.next_cursor
            if not cursor:
                break
    if as_json:
        print_json([item.model_dump(mode="json") for item in items])
    elif items:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("ID", "AGENT", "STATE", "NODE", "ATTEMPT", "CREATED"):
            table.add_column(column, no_wrap=True, justify="right" if column == "ID" else "left")
        table.add_column("REASON")
        for item in items:
            table.add_row(str(item.id), Text(item.agent), Text.from_markup(state_markup(item.state)),
                          Text(item.node or "-"), f"{item.attempt}/{item.max_attempts}", short_time(item.created_at),
                          Text(one_line(item.reason, 200) if item.reason else "", no_wrap=True, overflow="ellipsis"))
        _print_table(table)
    else:
        click.echo("no runs match" if params else "no runs yet; `alai agent run AGENT INPUT` starts one", err=True)
    if cursor:
        click.echo(f"{len(items)} shown; more with a larger --limit", err=True)


# -- definitions ------------------------------------------------------------------------------------


@agent.command("ls")
@json_option
@click.pass_context
def list_agents(ctx: click.Context, as_json: bool) -> None:
    """List the registered agents.

    A table of name, version, model, executor and description.
    """
    from rich.table import Table
    from rich.text import Text

    from alai.wire.runs import Agent

    with client_for(ctx) as client:
        found = [Agent.model_validate(item) for item in client.get_json(AGENTS)]
    if as_json:
        print_json([item.model_dump(mode="json") for item in found])
        return
    if not found:
        click.echo("no agents yet; `alai agent put FILE.md` registers one", err=True)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "VERSION", "MODEL", "EXECUTOR"):
        table.add_column(column, no_wrap=True, justify="right" if column == "VERSION" else "left")
    table.add_column("DESCRIPTION")
    for item in found:
        executor = item.executor + (f":{item.command}" if item.command else "")
        table.add_row(Text(item.name), str(item.version), Text(item.model or "-"), Text(executor),
                      Text(one_line(item.description, 200) if item.description else "-", no_wrap=True,
                           overflow="ellipsis"))
    _print_table(table)


@agent.command()
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), help="An earlier version.")
@click.option("--raw", is_flag=True, help="The definition file as it was put (front matter and prompt).")
@json_option
@click.pass_context
def show(ctx: click.Context, name: str, version: int | None, raw: bool, as_json: bool) -> None:
    """Show an agent: its front matter, then its system prompt."""
    from rich.markup import escape

    from alai.wire.runs import Agent

    with client_for(ctx) as client:
        params = {"version": version} if version is not None else None
        found = Agent.model_validate(client.get_json(f"{AGENTS}/{_agent_path(name)}", params=params))
    if as_json:
        print_json(found.model_dump(mode="json"))
        return
    if raw:
        click.echo(found.definition, nl=not found.definition.endswith("\n"))
        return
    out = output_console()
    out.print(f"[bold]{escape(found.name)}[/bold]  version {found.version}, {local_time(found.updated_at)} by "
              f"{escape(found.updated_by)}")
    matter = dict(found.front_matter)
    matter.pop("name", None)
    for key, value in (("executor", found.executor), ("model", found.model)):
        matter.setdefault(key, value)
    for key, value in matter.items():
        if value is None:
            continue
        shown = ", ".join(map(str, value)) if isinstance(value, list) else one_line(value, 300)
        out.print(f"  [dim]{escape(str(key)):<13}[/dim] {escape(shown)}")
    out.print()
    out.print(escape(found.system_prompt.rstrip()))


def _agent_path(name: str) -> str:
    if not re.match(AGENT_NAME_PATTERN, name):
        raise click.ClickException(f"{name!r} is not an agent name: 1-64 letters, digits, _ and -, starting with a "
                                   "letter or digit")
    return name


def _definition_files(paths: tuple[Path, ...]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(candidate for candidate in path.glob("*.md") if candidate.is_file())
            if not found:
                raise click.ClickException(f"{path} holds no *.md files")
            files += found
        else:
            files.append(path)
    unique = {file.resolve(): file for file in reversed(files)}  # named twice (a dir and a file): put once
    return [file for file in files if unique.get(file.resolve()) is file]


@agent.command()
@click.argument("paths", metavar="FILE_OR_DIR...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@json_option
@click.pass_context
def put(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Register or update agents from Markdown files.

    A directory means every *.md in it. The agent's name is the front matter's `name`, else the file's name without .md.
    Says for each whether it was created, updated (a new version) or unchanged.
    Exits 1 if any file was refused (the others are still put).
    """
    from alai.client import http
    from alai.wire.runs import Agent, AgentPut

    reports: list[dict[str, Any]] = []
    failed = 0
    with client_for(ctx) as client:
        for file in _definition_files(paths):
            try:
                text = file.read_text(encoding="utf-8")
                name = front_matter_name(text) or file.stem
                _agent_path(name)
                if len(text.encode()) > DEFINITION_MAX_BYTES:
                    raise click.ClickException(f"too large ({len(text.encode()):,} bytes; at most "
                                               f"{DEFINITION_MAX_BYTES // 1024} KiB)")
                try:
                    before = Agent.model_validate(client.get_json(f"{AGENTS}/{name}")).version
                except http.ApiError as error:
                    if error.status != 404:
                        raise
                    before = None
                body = _request_body(AgentPut, {"definition": text})
                after = Agent.model_validate(client.request("PUT", f"{AGENTS}/{name}", json=body).json())
            except (OSError, UnicodeDecodeError, click.ClickException, http.ApiError) as error:
                message = error.format_message() if isinstance(error, click.ClickException) else str(error)
                reports.append({"file": str(file), "error": message})
                failed += 1
                if not as_json:
                    click.echo(f"{file}: {message}", err=True)
                continue
            outcome = "created" if before is None else "unchanged" if before == after.version else "updated"
            reports.append({"file": str(file), "name": after.name, "result": outcome, "version": after.version})
            if not as_json:
                versions = f"v{before} → v{after.version}" if outcome == "updated" else f"v{after.version}"
                click.echo(f"{outcome:<9} {after.name} {versions}")
    if as_json:
        print_json(reports)
    if failed:
        raise click.ClickException(f"{failed} of {len(reports)} definitions were refused")


@agent.command()
@click.argument("name")
@click.pass_context
def rm(ctx: click.Context, name: str) -> None:
    """Delete an agent (runs already made keep the version they ran)."""
    with client_for(ctx) as client:
        client.request("DELETE", f"{AGENTS}/{_agent_path(name)}")
    click.echo(f"deleted {name}")


# `run`, `logs` and `result` live in agent_run.py; importing it attaches them.
from alai.cli import agent_run  # noqa: E402,F401
