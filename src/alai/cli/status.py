"""`alai status`."""

from __future__ import annotations

import click

from alai.cli.output import client_for, console, local_time, print_json

STATE_STYLE = {"ok": "green", "degraded": "yellow", "down": "red", "disabled": "dim"}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status report as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show the state of the control plane: database, migrations, modules, replicas.

    Exits 1 when the control plane is down or degraded, so scripts can check it.
    """
    from alai.wire.ops import StatusReport

    with client_for(ctx) as client:
        data = client.get_json("/v1/status")
        server = client.profile.server
    report = StatusReport.model_validate(data)
    if as_json:
        print_json(data)
    else:
        _render(report, server)
    if report.state != "ok":
        ctx.exit(1)


def _render(report, server: str) -> None:  # report: StatusReport
    from rich.table import Table

    out = console()
    style = STATE_STYLE.get(report.state, "")
    out.print(f"[bold]{server}[/bold]  alai {report.version}  state: [{style}]{report.state}[/{style}]")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("COMPONENT")
    table.add_column("STATE")
    table.add_column("DETAIL", overflow="fold")
    db = report.database
    details = []
    if db.server_version:
        details.append(f"PostgreSQL {db.server_version}{' (embedded)' if db.embedded else ''}")
    if db.latency_ms is not None:
        details.append(f"{db.latency_ms:g} ms")
    if db.migrations is not None:
        details.append(f"{db.migrations.applied} migrations applied, {len(db.migrations.pending)} pending")
    if db.detail:
        details.append(db.detail)
    table.add_row("database", _state(db.state), "\n".join(details))
    for module in report.modules:
        table.add_row(f"module {module.name}", _state(module.state), module.detail or "")
    out.print(table)
    if report.instances:
        replicas = Table(show_header=True, header_style="bold", box=None, pad_edge=False, title=None)
        for column in ("REPLICA", "HOST", "PID", "VERSION", "STARTED", "LAST SEEN"):
            replicas.add_column(column, no_wrap=True)
        for instance in report.instances:
            marker = "*" if instance.id == report.instance_id else ""
            replicas.add_row(instance.id + marker, instance.hostname, str(instance.pid), instance.version,
                             local_time(instance.started_at), local_time(instance.last_seen_at))
        out.print()
        out.print(replicas)
        out.print("[dim]* the replica that answered[/dim]")


def _state(state: str) -> str:
    style = STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/{style}]" if style else state
