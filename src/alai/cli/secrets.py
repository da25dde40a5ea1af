"""`alai secrets`: list, read, set and delete secrets by path; read the audit trail.

Paths are written `together/api-key` or `secret://together/api-key`, alike. `get`
writes the value as bytes, untouched (click.echo would strip what looks like an escape
code when piped), with a newline only on a terminal, so `$(alai secrets get p)` and
`alai secrets get p > file` give exactly the value. `set` never takes the value from the
command line, where it would stay in the shell's history and the process list.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Any
from urllib.parse import quote

import click

from alai.cli.mc import SinceParam, _print_table
from alai.cli.output import client_for, local_time, print_json
from alai.wire.secret_paths import PATH_MAX, PATH_PATTERN, REFERENCE_PREFIX, VALUE_MAX_BYTES

VALUES = "/v1/secrets/values"
AUDIT = "/v1/secrets/audit"
AUDIT_PAGE = 500
OUTCOME_STYLE = {"ok": "green", "denied": "red", "error": "red", "not_found": "yellow", "stale": "yellow"}

# -- pure helpers -------------------------------------------------------------------------------

_PATH = re.compile(PATH_PATTERN)
_PREFIX = re.compile(r"^[A-Za-z0-9._/-]*$")


def secret_path(value: str) -> str:
    """`secret://a/b` or `a/b` → `a/b`; a one-line error when it is not a secret path."""
    path = value.strip().removeprefix(REFERENCE_PREFIX).strip("/")
    if len(path) > PATH_MAX or not _PATH.match(path) or any(part in (".", "..") for part in path.split("/")):
        raise click.ClickException(f"{value!r} is not a secret path: use segments of letters, digits, '.', '_' "
                                   "and '-' joined by '/' (together/api-key, or secret://together/api-key)")
    return path


def prefix_of(value: str | None) -> str:
    prefix = (value or "").strip().removeprefix(REFERENCE_PREFIX).strip("/")
    if len(prefix) > PATH_MAX or not _PREFIX.match(prefix):
        raise click.ClickException(f"{value!r} is not a path prefix: letters, digits, '.', '_', '-' and '/' only")
    return prefix


def value_url(path: str) -> str:
    """The URL path of a checked secret path (no `.` or `..` segments, which httpx would resolve)."""
    return f"{VALUES}/{quote(path, safe='/')}"


def mount_label(mount: str) -> str:
    return mount or "/"


def stale_warning(path: str, fetched_at: datetime | str) -> str:
    return (f"warning: {path} is stale: its backend cannot be reached, so this is the value cached at "
            f"{local_time(fetched_at)}")


def read_new_value(keep_final_newline: bool) -> str:
    """The value from stdin when it is piped, else typed twice at a hidden prompt."""
    if sys.stdin.isatty():
        return click.prompt("Value", hide_input=True, confirmation_prompt=True, err=True)
    raw = sys.stdin.buffer.read()
    if not keep_final_newline:
        raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException("the value is not UTF-8 text; encode binary data first (base64)") from None


# -- commands ------------------------------------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True, help="Print as JSON.")


@click.group()
def secrets() -> None:
    """Secrets by path (together/api-key), from the backends the control plane mounts.

    Elsewhere a secret is referred to as secret://together/api-key; every command
    here takes either form. `alai run` puts secrets into a command's environment.
    """


@secrets.command("ls")
@click.argument("prefix", required=False)
@json_option
@click.pass_context
def ls(ctx: click.Context, prefix: str | None, as_json: bool) -> None:
    """List the secrets you may list (under PREFIX): path, mount, last change (local time).

    Values are never listed.
    """
    from rich.text import Text

    from alai.wire.secrets import SecretEntry

    wanted = prefix_of(prefix)
    with client_for(ctx) as client:
        entries = [SecretEntry.model_validate(item)
                   for item in client.get_json(VALUES, params={"prefix": wanted} if wanted else None)]
    if as_json:
        print_json([entry.model_dump(mode="json") for entry in entries])
        return
    if not entries:
        click.echo("no secrets" + (f" under {wanted!r}" if wanted else "") + "; `alai secrets set PATH` stores one",
                   err=True)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("PATH", "MOUNT", "UPDATED"):
        table.add_column(name, no_wrap=True)
    for entry in entries:
        table.add_row(Text(entry.path), Text(mount_label(entry.mount)), local_time(entry.updated_at))
    _print_table(table)


@secrets.command("get")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="The whole secret: path, value, mount, stale, fetched_at.")
@click.pass_context
def get(ctx: click.Context, path: str, as_json: bool) -> None:
    """Print the value of PATH, and nothing else.

    Piped, the output is exactly the value (no newline added), for scripts:
    `export KEY="$(alai secrets get together/api-key)"`. A value served from the
    cache while its backend is down comes with a warning on stderr.
    """
    from alai.wire.secrets import Secret

    wanted = secret_path(path)
    with client_for(ctx) as client:
        secret = Secret.model_validate(client.get_json(value_url(wanted)))
    if secret.stale:
        click.echo(stale_warning(secret.path, secret.fetched_at), err=True)
    if as_json:
        print_json(secret.model_dump(mode="json"))
        return
    data = secret.value.encode("utf-8")
    if sys.stdout.isatty() and not data.endswith(b"\n"):
        data += b"\n"
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@secrets.command("set")
@click.argument("path")
@click.argument("extra", nargs=-1, required=False, metavar="")
@click.option("--keep-final-newline", is_flag=True, help="Keep the newline that ends piped input (dropped by default).")
@json_option
@click.pass_context
def set_(ctx: click.Context, path: str, extra: tuple[str, ...], keep_final_newline: bool, as_json: bool) -> None:
    """Store a value at PATH (creating or replacing it).

    The value is read from stdin when it is piped (`pass show x | alai secrets set
    PATH`; one final newline dropped), else typed twice at a hidden prompt. It is
    never taken from the command line. Empty values are refused.
    """
    from alai.wire.secrets import SecretEntry

    if extra:
        raise click.UsageError("the value is never taken from the command line (it would stay in the shell's history "
                               "and the process list); pipe it in, or type it at the prompt")
    wanted = secret_path(path)
    value = read_new_value(keep_final_newline)
    if not value:
        raise click.ClickException("the value is empty; nothing was stored (`alai secrets rm` deletes a secret)")
    size = len(value.encode("utf-8"))
    if size > VALUE_MAX_BYTES:
        raise click.ClickException(f"the value is too large: {size:,} bytes; at most {VALUE_MAX_BYTES:,} are allowed")
    with client_for(ctx) as client:
        entry = SecretEntry.model_validate(client.request("PUT", value_url(wanted), json={"value": value}).json())
    if as_json:
        print_json(entry.model_dump(mode="json"))
    else:
        click.echo(f"stored {entry.path} (mount {mount_label(entry.mount)})")


@secrets.command("rm")
@click.argument("path")
@click.option("--yes", "-y", is_flag=True, help="Do not ask first.")
@click.pass_context
def rm(ctx: click.Context, path: str, yes: bool) -> None:
    """Delete the secret at PATH (asks first, unless --yes)."""
    wanted = secret_path(path)
    if not yes:
        if not sys.stdin.isatty():
            raise click.ClickException(f"not deleting {wanted} without asking: add --yes")
        click.confirm(f"Delete {wanted}?", abort=True, err=True)
    with client_for(ctx) as client:
        client.request("DELETE", value_url(wanted))
    click.echo(f"deleted {wanted}")


@secrets.command("audit")
@click.option("--path", help="Only this path (secret://… or a/b).")
@click.option("--principal", help="Only this principal, as the table shows it (a user's or a token's name).")
@click.option("--action", type=click.Choice(["read", "write", "delete", "list", "resolve"]), help="Only this action.")
@click.option("--outcome", type=click.Choice(["ok", "denied", "not_found", "error", "stale"]),
              help="Only this outcome.")
@click.option("--since", type=SinceParam(), help="Only since: ISO 8601 (local time) or an age like 2h, 3d.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many.")
@json_option
@click.pass_context
def audit(ctx: click.Context, path: str | None, principal: str | None, action: str | None, outcome: str | None,
          since: datetime | None, limit: int, as_json: bool) -> None:
    """Who read, wrote, listed or deleted which secret, when, and with what outcome.

    Newest first: time (local), principal, action, path, outcome, detail (why it
    was denied or failed). Values are never recorded. Needs an administrator.
    """
    from alai.wire.secrets import AuditPage

    params: dict[str, Any] = {}
    if path is not None:
        params["path"] = secret_path(path)
    for name, value in (("principal", principal), ("action", action), ("outcome", outcome)):
        if value is not None:
            params[name] = value
    if since is not None:
        params["since"] = since.isoformat()
    items: list = []
    cursor: str | None = None
    with client_for(ctx) as client:
        while len(items) < limit:
            page_params = {**params, "limit": min(AUDIT_PAGE, limit - len(items))}
            if cursor:
                page_params["cursor"] = cursor
            page = AuditPage.model_validate(client.get_json(AUDIT, params=page_params))
            items += page.items
            cursor = page.next_cursor
            if not cursor:
                break
    items = items[:limit]
    if as_json:
        print_json([item.model_dump(mode="json") for item in items])
    elif items:
        _print_table(_audit_table(items))
    else:
        click.echo("no audit entries" + (" match" if params else ""), err=True)
    if cursor and len(items) >= limit:
        click.echo(f"{len(items)} shown; there are more (raise --limit, or narrow with --since/--path)", err=True)


def _audit_table(items: list) -> Any:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("TIME", "PRINCIPAL", "ACTION", "PATH", "OUTCOME"):
        table.add_column(name, no_wrap=True)
    table.add_column("DETAIL")
    for item in items:
        style = OUTCOME_STYLE.get(item.outcome)
        outcome = f"[{style}]{escape(item.outcome)}[/{style}]" if style else escape(item.outcome)
        table.add_row(local_time(item.at), Text(item.principal), item.action, Text(item.path), outcome,
                      Text(" ".join((item.detail or "-").split())))
    return table
