"""`alai nodes`: the data-plane nodes and workers the control plane knows, and what they hold now."""

from __future__ import annotations

import click

from alai.cli.output import client_for, print_json


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def nodes(ctx: click.Context, as_json: bool) -> None:
    """The nodes (`alai node start`) and workers (`alai worker`): online or not, last
    heartbeat, the models they serve, the runs they are running.

    A node that stops heartbeating goes offline; runs that need a model only it has
    wait until it is back (`alai agent runs --state waiting`).
    """
    from rich.table import Table
    from rich.text import Text

    from alai.cli.agent import relative_time
    from alai.cli.mc import _print_table
    from alai.wire.runs import Node

    with client_for(ctx) as client:
        found = [Node.model_validate(item) for item in client.get_json("/v1/nodes")]
    if as_json:
        print_json([node.model_dump(mode="json") for node in found])
        return
    if not found:
        click.echo("no nodes have registered yet; start one with `alai node start` on a model machine", err=True)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "KIND", "ONLINE", "HEARTBEAT", "RUNNING"):
        table.add_column(column, no_wrap=True)
    table.add_column("MODELS")  # the one column that gives way to the terminal's width
    for node in found:
        running = ", ".join(str(run_id) for run_id in node.running) or "-"
        table.add_row(Text(node.name), Text(node.kind), Text("yes", "green") if node.online else Text("no", "red"),
                      relative_time(node.last_heartbeat_at),
                      f"{running} ({len(node.running)}/{node.max_concurrency})" if node.running else "-",
                      Text(", ".join(node.models) or "-", no_wrap=True, overflow="ellipsis"))
    _print_table(table)
