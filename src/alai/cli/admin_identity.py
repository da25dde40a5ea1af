"""`alai admin user|token|keys`: identity administration, run beside the database."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from pathlib import Path

import click

from alai.cli.admin import DATA_DIR_OPTION, admin, run_in_database
from alai.cli.output import local_time, print_json

DURATION = re.compile(r"^(\d+)([dhw])$")


def parse_duration(value: str | None) -> timedelta | None:
    if value is None or value in ("never", "0"):
        return None
    match = DURATION.match(value.strip())
    if not match:
        raise click.BadParameter("use a number with d, h or w (90d, 12h, 2w), or 'never'")
    amount, unit = int(match.group(1)), match.group(2)
    return {"d": timedelta(days=amount), "h": timedelta(hours=amount), "w": timedelta(weeks=amount)}[unit]


def _identity_service():
    from alai.server.identity import keys, service

    return service, keys


@admin.group()
def user() -> None:
    """Local users of the built-in sign-in."""


@user.command("create")
@click.argument("username")
@click.option("--email", help="Email address (also accepted as the sign-in name).")
@click.option("--name", "display_name", help="Display name.")
@click.option("--admin", "is_admin", is_flag=True, help="Grant the admin scope.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (for scripts).")
@DATA_DIR_OPTION
def user_create(username: str, email: str | None, display_name: str | None, is_admin: bool, password_stdin: bool,
                data_dir: Path | None) -> None:
    """Create a user who signs in with a password (stored as an argon2 hash)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("the password must have at least 8 characters")
    service, _ = _identity_service()
    created = run_in_database(data_dir, lambda conn: service.create_user(
        conn, username=username, password=password, email=email, display_name=display_name, admin=is_admin))
    click.echo(f"created user {created.username} ({created.id}){' with admin scope' if is_admin else ''}")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@DATA_DIR_OPTION
def user_list(as_json: bool, data_dir: Path | None) -> None:
    """List users."""
    service, _ = _identity_service()
    users = run_in_database(data_dir, lambda conn: service.list_users(conn))
    if as_json:
        print_json([u.model_dump(mode="json") for u in users])
        return
    for u in users:
        click.echo(f"{u.username:<24} {u.email or '-':<28} {'admin' if 'admin' in u.scopes else 'user':<6} "
                   f"last sign-in {local_time(u.last_login_at)}")


@admin.group()
def token() -> None:
    """API tokens for nodes, agents and scripts."""


@token.command("create")
@click.option("--name", required=True, help="What uses the token, e.g. forge-node.")
@click.option("--scopes", required=True, help="Comma-separated scopes, e.g. node (a node), node,gateway:use (a cloud worker).")
@click.option("--expires", default="90d", show_default=True, help="Lifetime: 90d, 12h, 2w or never.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@DATA_DIR_OPTION
def token_create(name: str, scopes: str, expires: str, as_json: bool, data_dir: Path | None) -> None:
    """Create an API token. Its value is printed once and stored only as a hash."""
    scope_list = [s.strip() for s in scopes.split(",") if s.strip()]
    if not scope_list:
        raise click.ClickException("give at least one scope with --scopes")
    lifetime = parse_duration(expires)
    service, _ = _identity_service()
    created = run_in_database(data_dir, lambda conn: service.create_api_token(
        conn, name=name, scopes=scope_list, created_by="alai admin", expires_in=lifetime))
    if as_json:
        print_json(created.model_dump(mode="json"))
        return
    click.echo(created.token)
    click.echo(f"token {created.id} for {name}: scopes {', '.join(created.scopes)}; "
               f"expires {local_time(created.expires_at) if created.expires_at else 'never'}. "
               "It is shown only now: store it safely.", err=True)


@token.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@DATA_DIR_OPTION
def token_list(include_revoked: bool, as_json: bool, data_dir: Path | None) -> None:
    """List API tokens (never their values)."""
    service, _ = _identity_service()
    tokens = run_in_database(data_dir, lambda conn: service.list_api_tokens(conn, include_revoked=include_revoked))
    if as_json:
        print_json([t.model_dump(mode="json") for t in tokens])
        return
    for t in tokens:
        state = "revoked" if t.revoked_at else "active"
        click.echo(f"{t.id}  {t.name:<20} {t.prefix}…  {','.join(t.scopes):<30} {state:<8} "
                   f"expires {local_time(t.expires_at) if t.expires_at else 'never'}  "
                   f"last used {local_time(t.last_used_at)}")


@token.command("revoke")
@click.argument("token_id")
@DATA_DIR_OPTION
def token_revoke(token_id: str, data_dir: Path | None) -> None:
    """Revoke an API token by id (see `alai admin token list`)."""
    service, _ = _identity_service()
    revoked = run_in_database(data_dir, lambda conn: service.revoke_api_token(conn, token_id=token_id))
    click.echo(f"revoked token {revoked.id} ({revoked.name})")


@admin.group()
def keys() -> None:
    """Signing keys of the built-in issuer."""


@keys.command("rotate")
@DATA_DIR_OPTION
def keys_rotate(data_dir: Path | None) -> None:
    """Start signing with a new key; tokens signed by the old one stay valid until they expire."""
    _, key_store = _identity_service()
    kid = run_in_database(data_dir, lambda conn: key_store.rotate(conn))
    click.echo(f"signing with new key {kid}; replicas pick it up within 30 s")


@keys.command("list")
@DATA_DIR_OPTION
def keys_list(data_dir: Path | None) -> None:
    """List signing keys, newest last."""
    _, key_store = _identity_service()
    for row in run_in_database(data_dir, lambda conn: key_store.list_keys(conn)):
        state = "active" if row["retired_at"] is None else f"retired {local_time(row['retired_at'])}"
        click.echo(f"{row['kid']}  {row['algorithm']}  created {local_time(row['created_at'])}  {state}")
