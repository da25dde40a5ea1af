"""`alai gateway status`: which model backend is up, since when, and where models go now."""

from __future__ import annotations

import click

from alai.cli.output import client_for, console, local_time, print_json


@click.group()
def gateway() -> None:
    """The model gateway: backends and routes."""


@gateway.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Each backend (up or down, since when, why) and where each configured model goes now.

    Exits 1 when a backend is down, so scripts can check it."""
    from rich.table import Table
    from rich.text import Text

    with client_for(ctx) as client:
        report = client.get_json("/v1/gateway/status")
    if as_json:
        print_json(report)
    else:
        out = console()
        backends = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("BACKEND", "KIND", "STATE", "SINCE", "MODELS", "URL"):
            backends.add_column(column, no_wrap=column != "URL")
        for backend in report["backends"]:
            state = {True: Text("up", "green"), False: Text("down", "red"), None: Text("unknown", "yellow")}[
                backend["up"]]
            if backend.get("reason"):
                state.append(f" ({backend['reason']})", "dim")
            backends.add_row(backend["name"], backend["kind"], state, local_time(backend["since"]),
                             str(backend["models"]), backend["url"])
        out.print(backends if report["backends"] else "no backends configured (ALAI_GATEWAY_CONFIG)")
        if report["models"]:
            models = Table(box=None, header_style="bold", pad_edge=False)
            for column in ("MODEL", "NOW"):
                models.add_column(column)
            for name, route in report["models"].items():
                if route["state"] == "routed":
                    where = Text(f"→ {route['backend']}" + (f" as {route['upstream_model']}"
                                                            if route["upstream_model"] != name else ""), "green")
                else:
                    where = Text(f"{route['state']}: {route.get('detail', '')}", "red" if route["state"] ==
                                 "unavailable" else "yellow")
                models.add_row(name, where)
            out.print()
            out.print(models)
    if any(backend["up"] is False for backend in report["backends"]):
        ctx.exit(1)


@gateway.command("usage")
@click.option("--since", default="30d", show_default=True, help="An age (2h, 7d, 4w) or an ISO date/time.")
@click.option("--by", type=click.Choice(["backend", "model", "principal", "day"]), default="model",
              show_default=True, help="How to group.")
@click.option("--principal", help="Only this principal (administrators; others always see their own).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def usage(ctx: click.Context, since: str, by: str, principal: str | None, as_json: bool) -> None:
    """Requests, errors, tokens, cost and latency through the gateway, grouped."""
    from rich.table import Table

    from alai.cli.mc import parse_since

    try:
        start = parse_since(since)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since") from None
    params = {"since": start.isoformat(), "by": by, **({"principal": principal} if principal else {})}
    with client_for(ctx) as client:
        report = client.get_json("/v1/gateway/usage", params=params)
    if as_json:
        print_json(report)
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in (by.upper(), "REQUESTS", "ERRORS", "TOKENS IN", "TOKENS OUT", "COST", "P50", "P99"):
        table.add_column(column, justify="left" if column == by.upper() else "right", no_wrap=True)
    for row in report["rows"]:
        table.add_row(row["key"] or "-", f"{row['requests']:,}", f"{row['errors']:,}", f"{row['tokens_in']:,}",
                      f"{row['tokens_out']:,}", f"${row['cost_usd']:.4f}", f"{row['latency_p50_ms']:.0f} ms",
                      f"{row['latency_p99_ms']:.0f} ms")
    total = report["total"]
    table.add_row("total", f"{total['requests']:,}", f"{total['errors']:,}", f"{total['tokens_in']:,}",
                  f"{total['tokens_out']:,}", f"${total['cost_usd']:.4f}", "", "", style="bold")
    console().print(f"since {local_time(report['since'])}" + (f", {report['principal']}" if report["principal"]
                                                                else ""))
    console().print(table)
