"""`alai login`, `logout`, `whoami`, `auth status`."""

from __future__ import annotations

import time
import webbrowser

import click

from alai.cli.output import client_for, local_time, print_json

LOGIN_TIMEOUT = 300.0


def _profile(ctx: click.Context):
    from alai.client import profiles

    try:
        return profiles.resolve((ctx.find_root().obj or {}).get("profile"))
    except profiles.ProfileError as error:
        raise click.ClickException(str(error)) from None


@click.command()
@click.option("--no-browser", is_flag=True, help="Print the sign-in URL and paste back the URL the browser ends on.")
@click.option("--timeout", default=LOGIN_TIMEOUT, show_default=True, help="Seconds to wait for the browser.")
@click.option("--check-secrets/--no-check-secrets", default=True, show_default=True,
              help="After signing in, check the control plane's secrets backends and your Bitwarden CLI (bw).")
@click.option("--no-bootstrap", is_flag=True,
              help="Only sign in; skip making this machine ready (profile, skills in ~/.claude, secrets, status).")
@click.option("--resume", is_flag=True, help="Skip the sign-in while the saved login still works; redo the set-up.")
@click.pass_context
def login(ctx: click.Context, no_browser: bool, timeout: float, check_secrets: bool, no_bootstrap: bool,
          resume: bool) -> None:
    """Sign in to the control plane of the current profile.

    Opens the browser at the sign-in page (the built-in one, or Azure AD B2C /
    Entra External ID if the control plane uses it); the browser comes back to a
    one-shot listener on http://localhost. Tokens are kept in the OS keyring, or
    in a 0600 file in the config dir where there is none.
    """
    import httpx

    from alai.client import credentials
    from alai.client import login as flow_module

    profile = _profile(ctx)
    if resume and _bootstrap(ctx, resuming=True, set_up=not no_bootstrap):
        return
    callback = None if no_browser else flow_module.CallbackServer()
    try:
        with httpx.Client(timeout=profile.timeout, follow_redirects=False) as http:
            port = callback.port if callback else _unused_port()
            flow = flow_module.prepare(profile.server, http, port=port)
            if no_browser:
                click.echo("Open this URL in a browser, sign in, then paste the full URL the browser ends on "
                           "(it starts with http://localhost and may show an error page):", err=True)
                click.echo(flow.authorize_url)
                pasted = click.prompt("Redirected URL", err=True)
                code = flow_module.code_from_redirect(flow, pasted)
            else:
                click.echo(f"Opening the browser to sign in to {profile.server} …", err=True)
                click.echo(f"If it does not open, visit: {flow.authorize_url}", err=True)
                webbrowser.open(flow.authorize_url)
                code = flow_module.code_from_redirect(flow, callback.wait(timeout))
            record = flow_module.exchange(flow, code, http, server=profile.server)
    except flow_module.LoginError as error:
        raise click.ClickException(str(error)) from None
    finally:
        if callback is not None:
            callback.close()
    where = credentials.save(profile.name, record)
    who = record.email or record.name or record.subject or "you"
    click.echo(f"Logged in to {profile.server} as {who} (profile {profile.name}).")
    if where == "file":
        click.echo(f"warning: no OS keyring here; tokens are in {credentials.file_path()} (mode 0600)", err=True)
    if profile.warnings:
        for warning in profile.warnings:
            click.echo(f"warning: {warning}", err=True)
    if check_secrets:
        _check_secrets(profile.server, record.access_token, profile.timeout)
    if not no_bootstrap:
        _bootstrap(ctx)


def _bootstrap(ctx: click.Context, *, resuming: bool = False, set_up: bool = True) -> bool:
    """After sign-in: make this machine ready, one line per step (alai.client.bootstrap).

    Resuming, it first checks that the saved login still works: if not, it returns
    False having done nothing (the caller signs in). Every step is idempotent, so a
    retry passes the finished ones at once and carries on where the last one stopped.
    """
    import os
    from pathlib import Path

    from alai.client import bootstrap, http, skills_sync

    profile = _profile(ctx)
    if resuming:
        try:
            if profile.login is None:
                return False
            with http.Client(profile) as client:
                me = client.get_json("/v1/identity/me")
        except http.ClientError:
            return False
        click.echo(f"Already logged in to {profile.server} as {me.get('email') or me.get('name') or me['subject']} "
                   f"(profile {profile.name}).", err=True)
        if not set_up:
            return True
        profile = _profile(ctx)  # with the login as the check above may have renewed it
    dest = Path(os.environ.get("ALAI_SKILLS_DEST") or "~/.claude").expanduser().absolute()
    marks = {"ok": "", "skip": "skipped: ", "warn": "warning: ", "fail": "FAILED: "}
    states: dict[str, str] = {}

    def report(number: int, total: int, name: str, outcome: bootstrap.Outcome) -> None:
        states[name] = outcome.state
        click.echo(f"[{number}/{total}] {name}: {marks[outcome.state]}{outcome.detail}", err=True)
        if outcome.fix:
            click.echo(f"      fix: {outcome.fix}", err=True)
        if outcome.failed:
            raise click.ClickException(f"this machine is not ready: step {number}/{total} ({name}) failed; fix "
                                       "what it says, then run `alai login --resume` to carry on from there")

    bootstrap.run(profile, dest=dest, report=report)
    skills = (f"skills in {skills_sync.home_relative(dest)}" if states.get("skills") in ("ok", "warn")
              else "no skills to sync")
    click.echo(f"Ready ({skills}); `alai doctor` checks this machine at any time.")
    return True


def _check_secrets(server: str, token: str, timeout: float) -> None:
    """After sign-in: the control plane's secrets backends, then the user's own `bw`."""
    import sys

    import httpx

    from alai.client import bitwarden

    try:
        response = httpx.get(f"{server}/v1/secrets/mounts", headers={"Authorization": f"Bearer {token}"},
                             timeout=timeout)
        if response.status_code == 200:
            down = [m for m in response.json() if m.get("healthy") is False]
            if down:
                for mount in down:
                    click.echo(f"secrets: the {mount['kind']} backend at '{mount['prefix'] or '/'}' is down: "
                               f"{mount.get('detail') or 'no detail'}", err=True)
            else:
                click.echo("secrets: the control plane's secrets backends answer", err=True)
        elif response.status_code not in (403, 404):
            click.echo(f"secrets: the control plane answered HTTP {response.status_code}", err=True)
    except httpx.HTTPError as error:
        click.echo(f"secrets: not checked ({type(error).__name__})", err=True)
    state = bitwarden.status()
    if state.state == "missing":
        click.echo("Bitwarden: bw is not installed (optional: https://bitwarden.com/help/cli/)", err=True)
    elif state.state == "unlocked":
        click.echo(f"Bitwarden: unlocked ({state.user} at {state.server})", err=True)
    elif state.state == "unauthenticated":
        click.echo("Bitwarden: not signed in; run `bw login` (or `bw login --apikey`)", err=True)
    elif state.state == "locked":
        click.echo(f"Bitwarden: locked ({state.user} at {state.server})", err=True)
        if sys.stdin.isatty() and click.confirm("Unlock your Bitwarden vault now?", default=False, err=True):
            bitwarden.unlock_interactively()
        else:
            click.echo("  unlock it with: export BW_SESSION=\"$(bw unlock --raw)\"", err=True)
    else:
        click.echo(f"Bitwarden: {state.detail}", err=True)


def _unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@click.command()
@click.pass_context
def logout(ctx: click.Context) -> None:
    """Revoke this profile's login at the server and forget it on this machine."""
    import httpx

    from alai.client import credentials
    from alai.client import login as flow_module

    profile = _profile(ctx)
    record = credentials.load(profile.name, profile.server)
    if record is None:
        click.echo(f"not logged in to {profile.server} (profile {profile.name})")
        return
    with httpx.Client(timeout=profile.timeout) as http:
        flow_module.revoke(record, http)
    credentials.delete(profile.name, profile.server)
    click.echo(f"logged out of {profile.server}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def whoami(ctx: click.Context, as_json: bool) -> None:
    """Show who the control plane thinks you are, and your scopes."""
    from alai.wire.identity import Me

    with client_for(ctx) as client:
        me = Me.model_validate(client.get_json("/v1/identity/me"))
        server = client.profile.server
    if as_json:
        print_json(me.model_dump())
        return
    click.echo(f"{me.name or me.subject} on {server}")
    click.echo(f"  subject  {me.subject} ({me.kind})")
    click.echo(f"  scopes   {' '.join(me.scopes)}")


@click.group()
def auth() -> None:
    """How this machine authenticates to the control plane."""


@auth.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Which credential the CLI uses, where it is stored, and when it expires."""
    from alai.client import credentials

    profile = _profile(ctx)
    record = credentials.load(profile.name, profile.server)
    storage = credentials.storage()
    warnings = list(profile.warnings)
    if record is not None and storage == "file":
        warnings.append(f"no OS keyring here; tokens are in {credentials.file_path()} (mode 0600)")
    data = {
        "profile": profile.name,
        "server": profile.server,
        "credential": profile.sources.get("token", "none"),
        "logged_in_as": (record.email or record.name or record.subject) if record else None,
        "issuer": record.issuer if record else None,
        "access_token_expires_at": record.expires_at if record else None,
        "can_refresh": bool(record and record.refresh_token),
        "storage": storage,
        "warnings": warnings,
    }
    if as_json:
        print_json(data)
    else:
        click.echo(f"profile     {profile.name} → {profile.server}")
        click.echo(f"credential  {data['credential']}")
        if record is not None:
            remaining = record.expires_at - time.time()
            state = f"expires {local_time(_utc(record.expires_at))}" if remaining > 0 else "expired (renewed on use)"
            click.echo(f"login       {data['logged_in_as']} via {record.issuer}; access token {state}; "
                       f"{'refreshable' if data['can_refresh'] else 'not refreshable'}")
        else:
            click.echo("login       none (run `alai login`)")
        click.echo(f"storage     {storage}")
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
    if record is None and profile.sources.get("token") == "none":
        ctx.exit(1)


def _utc(epoch: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC)
