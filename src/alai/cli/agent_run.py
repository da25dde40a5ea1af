"""`alai agent run`, `logs` and `result`: dispatching a run, following its events, its output.

Attached to the `agent` group defined in agent.py (imported at its end).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import click

from alai.cli.mc import TASK_ID
from alai.cli.output import client_for, print_json
from alai.wire.runs import (
    FINAL_STATES,
    INPUT_MAX_BYTES,
    MAX_ATTEMPTS_LIMIT,
)

RUNS, AGENTS = "/v1/runs", "/v1/agents"
from alai.cli.agent import (  # the helpers and the group this module extends
    EVENTS_PAGE,
    RUN_ID,
    STREAM_READ_TIMEOUT,
    DurationParam,
    _cancel_message,
    _read_input,
    _request_body,
    _stderr_color,
    _stdout_color,
    agent,
    describe_event,
    describe_state,
    event_time,
    failure_message,
    format_seconds,
    is_final,
)

# -- following a run ---------------------------------------------------------------------------------


def run_events(client, run_id: int, *, after: str | None = None,
               on_retry: Callable[[str, float], None] = lambda reason, delay: None) -> Iterator[tuple[str, Any]]:
    """(raw JSON, RunEvent) of each event of the run's stream, once each, up to and including the final one."""
    from pydantic import ValidationError

    from alai.client import sse
    from alai.wire.runs import RunEvent

    seen: set[int] = set()
    for _kind, data in sse.follow(client, f"{RUNS}/{run_id}/stream", last_id=after, read_timeout=STREAM_READ_TIMEOUT,
                                  probe_path=f"{RUNS}/{run_id}", on_retry=on_retry):
        try:
            event = RunEvent.model_validate_json(data)
        except ValidationError:  # not a run event (a kind of message this CLI does not know)
            continue
        if event.id in seen:
            continue
        seen.add(event.id)
        yield data, event
        if is_final(event):
            return  # the server ends the stream here; sse.follow would reconnect forever


class LivePrinter:
    """What `run` shows while it follows: output text to stdout as it comes, the rest as dim lines on stderr."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.color = _stderr_color()
        self.mid_line = False  # stdout's last output did not end its line
        self.last_state = ""
        self.first_at: datetime | None = None

    def output(self, text: str) -> None:
        if not text:
            return
        sys.stdout.write(text)
        sys.stdout.flush()
        self.mid_line = not text.endswith("\n")

    def note(self, text: str) -> None:
        if self.quiet:
            return
        if self.mid_line and sys.stdout.isatty() and sys.stderr.isatty():
            click.echo("", err=True)  # the same terminal: the note goes on a line of its own
            self.mid_line = False
        click.echo(click.style(text, dim=True), err=True, color=self.color)

    def event(self, event) -> None:
        self.first_at = self.first_at or event.at
        if event.kind == "output":
            self.output(str(event.data.get("text", "")))
        elif event.kind == "state":
            line = describe_state(event.data, event.attempt)
            state = event.data.get("state")
            if state == "succeeded":
                took = (event.at - self.first_at).total_seconds()
                self.note(f"succeeded in {format_seconds(took)}" if took > 0 else "succeeded")
            elif state not in FINAL_STATES and line != self.last_state:  # a failure ends with an error line
                self.note(line)
            self.last_state = line
        elif event.kind in ("tool_call", "log"):
            self.note(("→ " if event.kind == "tool_call" else "") + describe_event(event))
        elif event.kind == "usage":
            self.note(f"usage: {describe_event(event)}")

    def finish(self) -> None:
        if self.mid_line and sys.stdout.isatty():
            click.echo("")  # the shell's prompt on its own line
            self.mid_line = False


def _final_reason(client, run_id: int, final) -> tuple[str | None, int | None]:
    """Why a run did not succeed, and its timeout: from the final event, else from the run and its result."""
    from alai.wire.runs import Run, RunResult

    reason = (final.data.get("reason") or final.data.get("error")) if final is not None else None
    run = Run.model_validate(client.get_json(f"{RUNS}/{run_id}"))
    if not reason:
        reason = run.reason
    if not reason:
        from alai.client import http

        try:
            reason = RunResult.model_validate(client.get_json(f"{RUNS}/{run_id}/result")).error
        except http.ApiError:
            reason = None
    return reason, run.timeout_seconds


def _cancel_on_interrupt(ctx: click.Context, client, run_id: int) -> None:
    """Ctrl-C while following `run`: the run is cancelled, and the command exits 130."""
    from alai.client import http
    from alai.wire.runs import Run

    if sys.stderr.isatty():
        click.echo("", err=True)  # past the ^C the terminal echoed
    try:
        run = Run.model_validate(client.request("POST", f"{RUNS}/{run_id}/cancel").json())
    except http.ClientError as error:
        if isinstance(error, http.ApiError) and error.status == 409:  # it had just finished
            click.echo(error.problem.detail or str(error), err=True)
        else:
            click.echo(f"Error: could not cancel run {run_id} ({error}); try `alai agent cancel {run_id}`",
                       err=True)
    else:
        click.echo(_cancel_message(run), err=True)
    ctx.exit(130)




@agent.command()
@click.argument("name", metavar="AGENT")
@click.argument("text", metavar="[INPUT|-]", required=False)
@click.option("--model", "-m", help="Use this model instead of the agent's.")
@click.option("--task", "task_id", type=TASK_ID, help="A Mission Control task (MC-123) to comment the result on.")
@click.option("--timeout", type=DurationParam(), help="Give up after this long: 90s, 10m, 1h (default: the agent's).")
@click.option("--max-attempts", type=click.IntRange(1, MAX_ATTEMPTS_LIMIT), help="Attempts if a worker is lost.")
@click.option("--priority", type=click.IntRange(-100, 100), help="Higher runs first (-100 to 100, default 0).")
@click.option("--detach", "-d", is_flag=True, help="Print the run id and return; do not follow the run.")
@click.option("--json", "as_json", is_flag=True, help="The run's events on stdout, one JSON object per line.")
@click.pass_context
def run(ctx: click.Context, name: str, text: str | None, model: str | None, task_id: str | None,
        timeout: int | None, max_attempts: int | None, priority: int | None, detach: bool, as_json: bool) -> None:
    """Run AGENT on INPUT and stream its output until it ends.

    INPUT `-`, or no INPUT with stdin not a terminal, reads stdin. The output goes to
    stdout as the model writes it; state changes (queued, waiting and why, running on
    which node) go to stderr. Exits 0 when the run succeeded, 1 when it failed, timed
    out or was cancelled (the reason on stderr). Ctrl-C cancels the run (exit 130).
    A lost connection is resumed where it broke off.

    --detach prints the run id (with --json: the run) and returns at once.
    """
    import uuid

    from alai.cli import hive
    from alai.wire.runs import Run, RunCreate

    fields: dict[str, Any] = {"agent": name, "input": _read_input(text)}
    size = len(fields["input"].encode())
    if size > INPUT_MAX_BYTES:
        raise click.ClickException(f"the input is too large: {size:,} bytes; at most {INPUT_MAX_BYTES:,} "
                                   f"({INPUT_MAX_BYTES // 1024 // 1024} MiB) are allowed")
    for key, value in (("model", model), ("task_id", task_id), ("timeout_seconds", timeout),
                       ("max_attempts", max_attempts), ("priority", priority)):
        if value is not None:
            fields[key] = value
    body = _request_body(RunCreate, fields)
    with client_for(ctx) as client:
        created = Run.model_validate(hive._post_retrying_once(client, RUNS, body, str(uuid.uuid4())))
        if detach:
            if as_json:
                print_json(created.model_dump(mode="json"))
            elif sys.stdout.isatty():
                click.echo(f"run {created.id} {created.state} (alai agent logs {created.id} -f to follow it)")
            else:
                click.echo(created.id)
            return
        printer = LivePrinter(quiet=as_json)
        model_note = f", model {created.model}" if created.model else ""
        printer.note(f"run {created.id}: {created.agent} v{created.agent_version}{model_note} (Ctrl-C cancels it)")

        def retrying(reason: str, delay: float) -> None:
            printer.note(f"connection lost ({reason}); reconnecting in {delay:.1f} s")

        final = None
        try:
            for data, event in run_events(client, created.id, on_retry=retrying):
                if as_json:
                    click.echo(data)
                else:
                    printer.event(event)
                final = event
        except KeyboardInterrupt:
            printer.finish()
            _cancel_on_interrupt(ctx, client, created.id)
        except BrokenPipeError:
            _stdout_gone()
            return
        printer.finish()
        state = final.data.get("state") if final is not None else None
        if state != "succeeded":
            reason, run_timeout = _final_reason(client, created.id, final)
            raise click.ClickException(failure_message(created.id, state or "?", reason, run_timeout))


def _stdout_gone() -> None:
    """The reader of our stdout left (`| head`): stop quietly, without Python's complaint at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _event_pages(client, run_id: int) -> Iterator[tuple[str, Any]]:
    from alai.wire.runs import RunEventPage

    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": EVENTS_PAGE, **({"after": after} if after else {})}
        page = RunEventPage.model_validate(client.get_json(f"{RUNS}/{run_id}/events", params=params))
        for event in page.items:
            yield event.model_dump_json(), event
        if not page.next_after or not page.items:
            return
        after = page.next_after


class LogPrinter:
    """`logs` for people, all on stdout: output text as written, every other event on a line with its time."""

    def __init__(self) -> None:
        self.color = _stdout_color()
        self.mid_line = False

    def event(self, event) -> None:
        if event.kind == "output":
            text = str(event.data.get("text", ""))
            if text:
                click.echo(text, nl=False)
                self.mid_line = not text.endswith("\n")
            return
        if self.mid_line:
            click.echo("")
            self.mid_line = False
        when = click.style(event_time(event.at), dim=True)
        kind = click.style(f"{event.kind:<9}", fg=_fg(event), bold=event.kind == "state")
        click.echo(f"{when} {kind} {describe_event(event)}", color=self.color)

    def finish(self) -> None:
        if self.mid_line:
            click.echo("")


def _fg(event) -> str | None:
    if event.kind != "state":
        return None
    return {"succeeded": "green", "failed": "red", "timed_out": "red", "waiting": "yellow",
            "running": "blue"}.get(event.data.get("state"))


@agent.command()
@click.argument("run_id", metavar="RUN", type=RUN_ID)
@click.option("--follow", "-f", is_flag=True, help="Keep following the run live until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Each event as the API sends it, one per line (JSON Lines).")
@click.pass_context
def logs(ctx: click.Context, run_id: int, follow: bool, as_json: bool) -> None:
    """Show a run's events, oldest first (-f: live).

    State changes, output, tool calls, usage: output text as the model wrote it,
    every other event on a line of its own with its local time. -f follows the run
    live until it ends (Ctrl-C stops watching; the run goes on).
    """
    printer = LogPrinter()
    last_position: str | None = None

    def show(data: str, event) -> None:
        nonlocal last_position
        last_position = event.position
        if as_json:
            click.echo(data)
        else:
            printer.event(event)

    def retrying(reason: str, delay: float) -> None:
        click.echo(f"connection lost ({reason}); reconnecting in {delay:.1f} s", err=True)

    try:
        with client_for(ctx) as client:
            ended = False
            for data, event in _event_pages(client, run_id):
                show(data, event)
                ended = ended or is_final(event)
            if follow and not ended:
                for data, event in run_events(client, run_id, after=last_position, on_retry=retrying):
                    show(data, event)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        _stdout_gone()
        return
    if not as_json:
        printer.finish()


@agent.command()
@click.argument("run_id", metavar="RUN", type=RUN_ID)
@click.option("--wait", is_flag=True, help="Wait for the run to end first.")
@click.option("--json", "as_json", is_flag=True, help="The whole result: state, output, error, usage.")
@click.pass_context
def result(ctx: click.Context, run_id: int, wait: bool, as_json: bool) -> None:
    """Print a finished run's output, and nothing else (for scripts).

    Exits 1 when the run did not succeed (the reason on stderr), and when it has not
    finished yet unless --wait.
    """
    from alai.wire.runs import RunResult

    with client_for(ctx) as client:
        if wait:
            for _event in run_events(client, run_id):
                pass
        outcome = RunResult.model_validate(client.get_json(f"{RUNS}/{run_id}/result"))
        timeout = client.get_json(f"{RUNS}/{run_id}")["timeout_seconds"] if outcome.state == "timed_out" else None
    if as_json:
        print_json(outcome.model_dump(mode="json"))
    elif outcome.output:
        click.echo(outcome.output, nl=sys.stdout.isatty() and not outcome.output.endswith("\n"))
    if outcome.state != "succeeded":
        raise click.ClickException(failure_message(run_id, outcome.state, outcome.error, timeout))
