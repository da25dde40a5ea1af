"""`alai skills`: the skills, rules and agents the control plane mirrors from git.

`sync` keeps a git clone of them (by default ~/.claude) with the `git` binary,
through the control plane's read-only git endpoint; `ls`, `cat` and `status` read
them over the API. The engine of `sync` is `alai.client.skills_sync`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from alai.cli.output import client_for, local_time, print_json

DEFAULT_DEST = "~/.claude"
TREE = "/v1/skills/tree"
FILES = "/v1/skills/files"

# -- pure helpers -------------------------------------------------------------------------------


def skills_path(value: str | None) -> str:
    """A path inside the repository: `/agents/x.md`, `agents/x.md/` → `agents/x.md`."""
    path = (value or "").strip().strip("/")
    if any(part in (".", "..") for part in path.split("/")) or "\\" in path or "\0" in path:
        raise click.ClickException(f"{value!r} is not a path inside the skills repository: use a/b/c.md, "
                                   "without '.' or '..' segments")
    return path


def api_url(base: str, path: str) -> str:
    """The URL path of a checked repository path (httpx would resolve `.`/`..`, which we refused)."""
    return f"{base}/{quote(path, safe='/')}" if path else base


def age_text(seconds: float | None) -> str:
    """12 s, 5 min, 3 h, 2 d."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def size_text(size: int | None) -> str:
    if size is None:
        return "-"
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"


def entry_label(entry: dict[str, Any]) -> str:
    suffix = {"tree": "/", "commit": " (submodule)"}.get(entry.get("type", ""), "")
    return entry["path"] + suffix


def dest_path(value: str) -> Path:
    return Path(value).expanduser().absolute()


def sync_error(error: Exception) -> click.ClickException:
    return click.ClickException(str(error))


# -- commands ------------------------------------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
ref_option = click.option("--ref", help="A branch, tag or commit (default: the repository's default branch).")
dest_option = click.option("--dest", default=DEFAULT_DEST, show_default=True, envvar="ALAI_SKILLS_DEST",
                           help="The local clone (env ALAI_SKILLS_DEST).")


@click.group()
def skills() -> None:
    """Skills, rules and agents, mirrored by the control plane from a git repository.

    `alai skills sync` keeps a clone of them in ~/.claude; `ls`, `cat` and `status`
    read them from the control plane.
    """


@skills.command("sync")
@dest_option
@click.option("--ref", help="The branch to follow (default: the clone's own; the repository's default at first).")
@click.option("--dry-run", is_flag=True, help="Fetch and show what would change; change nothing in the clone.")
@json_option
@click.pass_context
def sync(ctx: click.Context, dest: str, ref: str | None, dry_run: bool, as_json: bool) -> None:
    """Bring the local clone of the skills up to date (by default ~/.claude).

    The first time it clones them (DEST missing or empty); afterwards it fetches and
    fast-forwards. It never overwrites anything: local uncommitted changes, local
    commits, or a DEST that is not a clone of this control plane's skills stop it
    before it changes anything, with what to do. Needs the `git` binary; your token
    is handed to git through its environment, never on the command line or in
    .git/config.
    """
    from alai.client import skills_sync

    where = dest_path(dest)
    with client_for(ctx) as client:
        server = client.profile.server
        try:
            status = skills_sync.mirror_status(client)
        except skills_sync.SyncError as error:
            raise sync_error(error) from None
        token = client.bearer()
    if not token:
        raise click.ClickException(f"no credentials for {server}: run `alai login`")
    if status.get("error"):
        click.echo(f"warning: the control plane's mirror is {age_text(status.get('age_seconds'))} old (its last "
                   f"fetch failed: {status['error']}); syncing what it has", err=True)

    def step(line: str) -> None:
        click.echo(line, err=True)

    try:
        result = skills_sync.sync(server, token, where, ref=ref, dry_run=dry_run, step=step)
    except skills_sync.SyncError as error:
        if error.result is not None and not as_json:
            _show_changes(error.result)
        raise sync_error(error) from None
    if as_json:
        print_json(result.as_dict())
        return
    if result.action.startswith("would-"):
        _show_changes(result)
    for note in result.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(skills_sync.summary(result))


def _show_changes(result: Any) -> None:
    if result.diffstat:
        click.echo(result.diffstat)
    if result.commits:
        click.echo("commits:")
        for commit in result.commits:
            click.echo(f"  {commit}")


@skills.command("ls")
@click.argument("path", required=False)
@ref_option
@click.option("-r", "--recursive", is_flag=True, help="Everything below PATH, not only its entries.")
@json_option
@click.pass_context
def ls(ctx: click.Context, path: str | None, ref: str | None, recursive: bool, as_json: bool) -> None:
    """List the files and folders at PATH (default: the top) in the mirrored repository."""
    wanted = skills_path(path)
    params: dict[str, str] = {"recursive": "true"} if recursive else {}
    if ref:
        params["ref"] = ref
    from alai.wire.skills import SkillTree

    with client_for(ctx) as client:
        tree = SkillTree.model_validate(client.get_json(api_url(TREE, wanted), params=params))
    if as_json:
        print_json(tree.model_dump(mode="json"))
        return
    if not tree.entries:
        click.echo(f"nothing at {wanted or 'the top'} ({tree.ref} @ {tree.commit[:7]})", err=True)
        return
    from rich.table import Table
    from rich.text import Text

    from alai.cli.mc import _print_table

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("SIZE", justify="right", no_wrap=True)
    table.add_column("PATH")
    for entry in sorted(tree.entries, key=lambda item: item.path):
        table.add_row(size_text(entry.size) if entry.type == "blob" else "-",
                      Text(entry_label(entry.model_dump()), style="bold" if entry.type == "tree" else ""))
    _print_table(table)


@skills.command("cat")
@click.argument("path")
@ref_option
@click.pass_context
def cat(ctx: click.Context, path: str, ref: str | None) -> None:
    """Write the file at PATH to stdout, byte for byte."""
    wanted = skills_path(path)
    if not wanted:
        raise click.ClickException("name a file: alai skills cat PATH (`alai skills ls` lists them)")
    with client_for(ctx) as client:
        response = client.request("GET", api_url(FILES, wanted), params={"ref": ref} if ref else None,
                                  headers={"Accept": "*/*"})
    sys.stdout.flush()
    sys.stdout.buffer.write(response.content)
    sys.stdout.buffer.flush()


@skills.command("status")
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The control plane's mirror: which repository, which commit, how old, the last error.

    Exits 1 when no repository is configured or the last fetch failed (the last
    mirrored state is still served).
    """
    from alai.wire.skills import SkillsStatus

    with client_for(ctx) as client:
        report = SkillsStatus.model_validate(client.get_json("/v1/skills/status"))
    if as_json:
        print_json(report.model_dump(mode="json"))
    elif not report.configured:
        click.echo("no skills repository: set ALAI_SKILLS_REPO on the control plane (a git URL or a local path)")
    else:
        _render_status(report)
    if not report.configured or report.error:
        ctx.exit(1)


def _render_status(report: Any) -> None:  # report: SkillsStatus
    from rich.text import Text

    from alai.cli.output import console

    out = console()
    head = report.head_commit
    rows = [
        ("repository", report.repo or "-"),
        ("head", f"{report.head_ref or '-'} @ {head[:12] if head else '-'} ({report.refs} "
                 f"{'ref' if report.refs == 1 else 'refs'} mirrored)"),
        ("mirrored", f"{local_time(report.last_success_at)} ({age_text(report.age_seconds)} ago)"
         if report.last_success_at else "never"),
        ("last fetch", local_time(report.last_fetch_at) + (" (fetching now)" if report.fetching else "")),
    ]
    for key, value in rows:
        out.print(f"{key:<11} {value}", markup=False)
    if report.error:
        out.print(Text.assemble(("error", "red"), f"       {report.error}"))
