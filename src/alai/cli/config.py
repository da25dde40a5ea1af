"""`alai config`: client profiles."""

from __future__ import annotations

import click

from alai.cli.output import console, print_json


def _profiles():
    from alai.client import profiles

    return profiles


def _fail(error: Exception) -> click.ClickException:
    return click.ClickException(str(error))


@click.group()
def config() -> None:
    """Show and change client profiles.

    A profile names a control plane (its server URL …). Settings are stored in
    the user config dir (ALAI_CONFIG_DIR overrides it); ALAI_SERVER, ALAI_TOKEN
    and ALAI_PROFILE override the file.
    """


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Show the effective settings and where each comes from (tokens are masked)."""
    profiles = _profiles()
    try:
        profile = profiles.resolve((ctx.find_root().obj or {}).get("profile"))
    except profiles.ProfileError as error:
        raise _fail(error) from None
    token = _mask(profile.token)
    data = {
        "profile": profile.name,
        "config_file": str(profiles.config_path()),
        "server": profile.server,
        "token": token,
        "timeout": profile.timeout,
        "sources": profile.sources,
    }
    if as_json:
        print_json(data)
        return
    out = console()
    out.print(f"profile  {profile.name}   ({profiles.config_path()})")
    for key in ("server", "token", "timeout"):
        value = data[key] if data[key] is not None else "-"
        out.print(f"{key:<8} {value}   [dim]({profile.sources.get(key, 'default')})[/dim]")


@config.command("set")
@click.argument("key")
@click.argument("value")
@click.option("--profile", "profile_name", help="Profile to change (created if new; default: the current one).")
def set_(key: str, value: str, profile_name: str | None) -> None:
    """Set KEY to VALUE in a profile (keys: server, token, timeout)."""
    profiles = _profiles()
    try:
        parsed = profiles.validate(key, value)
        data = profiles.load()
        name = profile_name or data["current"]
        data["profiles"].setdefault(name, {})[key] = parsed
        profiles.save(data)
    except profiles.ProfileError as error:
        raise _fail(error) from None
    click.echo(f"{name}: {key} = {_mask(value) if key == 'token' else parsed}")


@config.command("unset")
@click.argument("key")
@click.option("--profile", "profile_name", help="Profile to change (default: the current one).")
def unset(key: str, profile_name: str | None) -> None:
    """Remove KEY from a profile, so its default applies again."""
    profiles = _profiles()
    try:
        data = profiles.load()
    except profiles.ProfileError as error:
        raise _fail(error) from None
    name = profile_name or data["current"]
    if key not in data["profiles"].get(name, {}):
        raise click.ClickException(f"profile {name!r} has no {key!r} set; `alai config show` lists what is")
    del data["profiles"][name][key]
    profiles.save(data)
    click.echo(f"{name}: {key} unset")


@config.command("use")
@click.argument("name")
def use(name: str) -> None:
    """Make NAME the current profile."""
    profiles = _profiles()
    try:
        data = profiles.load()
    except profiles.ProfileError as error:
        raise _fail(error) from None
    if name not in data["profiles"] and name != profiles.DEFAULT_PROFILE:
        raise click.ClickException(
            f"no profile named {name!r}; create it with `alai config set --profile {name} server URL`"
        )
    data["current"] = name
    profiles.save(data)
    click.echo(f"current profile: {name}")


@config.command("profiles")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def list_profiles(as_json: bool) -> None:
    """List the profiles; the current one is marked."""
    profiles = _profiles()
    try:
        data = profiles.load()
    except profiles.ProfileError as error:
        raise _fail(error) from None
    names = sorted(set(data["profiles"]) | {data["current"]})
    rows = [{"name": n, "current": n == data["current"],
             "server": data["profiles"].get(n, {}).get("server", profiles.DEFAULT_SERVER)} for n in names]
    if as_json:
        print_json(rows)
        return
    for row in rows:
        click.echo(f"{'*' if row['current'] else ' '} {row['name']:<16} {row['server']}")


@config.command("rm")
@click.argument("name")
def remove(name: str) -> None:
    """Delete profile NAME."""
    profiles = _profiles()
    try:
        data = profiles.load()
    except profiles.ProfileError as error:
        raise _fail(error) from None
    if name not in data["profiles"]:
        raise click.ClickException(f"no profile named {name!r}; `alai config profiles` lists them")
    del data["profiles"][name]
    if data["current"] == name:
        data["current"] = profiles.DEFAULT_PROFILE
    profiles.save(data)
    click.echo(f"removed profile {name}")


def _mask(token: str | None) -> str | None:
    if not token:
        return None
    return token[:4] + "…" + f"({len(token)} chars)" if len(token) > 8 else "…"
