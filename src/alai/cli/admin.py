"""`alai admin`: operations on the control plane's own database (needs the server extra)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from alai.cli.output import console, print_json


def _server_modules():
    try:
        from alai.server.db import embedded, migrations
        from alai.server.settings import Settings
    except ImportError as error:
        raise click.ClickException(
            f"`alai admin` runs beside the database and needs the server extra ({error.name} is missing): "
            "pip install 'alai[server]'"
        ) from None
    return embedded, migrations, Settings


@click.group()
def admin() -> None:
    """Administer the control plane's database.

    Uses ALAI_DATABASE_URL, or the embedded PostgreSQL in the data directory
    (started for the command if `alai serve` is not running on it).
    """


@contextmanager
def database(data_dir: Path | None) -> Iterator[str]:
    """The URL of the control plane's database for the length of a command: the
    configured one, the running embedded one, or the embedded one started just for
    this (and stopped after). Database errors become one-line CLI errors."""
    import psycopg

    embedded, migrations, Settings = _server_modules()
    from alai.server.problems import ProblemError

    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    owned = None
    try:
        if settings.database_url is not None:
            url = settings.database_url.get_secret_value()
        else:
            url = embedded.EmbeddedPostgres.url_of_running(settings.data_dir)
            if url is None:
                owned = embedded.EmbeddedPostgres(settings.data_dir)
                url = owned.start()
        yield url
    except (embedded.EmbeddedPostgresError, migrations.MigrationError) as error:
        raise click.ClickException(str(error)) from None
    except ProblemError as error:
        raise click.ClickException(error.detail) from None
    except psycopg.OperationalError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else "error"
        raise click.ClickException(f"cannot reach the database ({reason}); check ALAI_DATABASE_URL") from None
    finally:
        if owned is not None:
            owned.stop()


def run_in_database(data_dir: Path | None, work):
    """Runs `work(conn)` (async) in one transaction on the control plane's database."""
    import asyncio

    import psycopg
    from psycopg.rows import dict_row

    _, migrations, _ = _server_modules()

    async def main(url: str):
        async with await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row) as conn:
            async with conn.transaction():
                return await work(conn)

    with database(data_dir) as url:
        if migrations.status(url).pending:
            raise click.ClickException("migrations are pending: run `alai admin migrate` first")
        return asyncio.run(main(url))


DATA_DIR_OPTION = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
                               help="Embedded data directory [env ALAI_DATA_DIR].")


@admin.command()
@click.option("--status", "show_status", is_flag=True, help="Only show what is applied and what is pending.")
@DATA_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def migrate(show_status: bool, data_dir: Path | None, as_json: bool) -> None:
    """Apply pending database migrations (or, with --status, list them)."""
    _, migrations, _ = _server_modules()
    with database(data_dir) as url:
        if show_status:
            _show_plan(migrations.status(url), as_json)
            return
        applied = migrations.migrate(url, log=lambda line: None if as_json else click.echo(line))
    if as_json:
        print_json({"applied": applied})
    else:
        click.echo(f"{len(applied)} migration(s) applied" if applied else "database is up to date")


def _show_plan(plan, as_json: bool) -> None:
    data = {
        "applied": plan.applied,
        "pending": [m.key for m in plan.pending],
        "unknown": plan.unknown,
        "changed": plan.changed,
    }
    if as_json:
        print_json(data)
        return
    out = console()
    for key in plan.applied:
        marker = "changed!" if key in plan.changed else "applied"
        out.print(f"{marker:<9} {key}")
    for key in data["pending"]:
        out.print(f"[yellow]{'pending':<9}[/yellow] {key}")
    for key in plan.unknown:
        out.print(f"{'unknown':<9} {key}  (applied by a newer build)")
    out.print(f"{len(plan.applied)} applied, {len(data['pending'])} pending")


# Subgroups live in their own modules; importing them attaches them to `admin`.
from alai.cli import (
    admin_identity,  # noqa: E402,F401
    admin_import,  # noqa: E402,F401
    admin_secrets,  # noqa: E402,F401
)
