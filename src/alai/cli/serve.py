"""`alai serve`."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option("--host", help="Address to listen on [env ALAI_HOST; default 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [env ALAI_PORT; default 8420].")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the embedded PostgreSQL keeps its data [env ALAI_DATA_DIR].")
@click.option("--modules", help="Modules to serve, comma-separated, or 'all' [env ALAI_MODULES].")
def serve(host: str | None, port: int | None, data_dir: Path | None, modules: str | None) -> None:
    """Run the control plane.

    Without ALAI_DATABASE_URL it runs a private PostgreSQL in the data directory
    (created on first use, kept across restarts, stopped on exit). Stop with
    Ctrl-C or SIGTERM.
    """
    try:
        from pydantic import ValidationError

        from alai.server import serve as server_serve
        from alai.server.db.embedded import EmbeddedPostgresError
        from alai.server.db.migrations import MigrationError
        from alai.server.modules import UnknownModule
        from alai.server.settings import Settings
    except ImportError as error:
        raise click.ClickException(
            f"the control plane is not installed ({error.name} is missing): pip install 'alai[server]'"
        ) from None
    overrides = {key: value for key, value in
                 {"host": host, "port": port, "data_dir": data_dir, "modules": modules}.items() if value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise click.ClickException(f"invalid setting {field} (ALAI_{field.upper()}): {first['msg']}") from None
    if settings.gateway_config is not None:  # checked before anything starts: one line, not a traceback
        from alai.server.gateway import config as gateway_config

        try:
            gateway_config.load(settings.gateway_config)
        except gateway_config.ConfigError as error:
            raise click.ClickException(f"{error} (ALAI_GATEWAY_CONFIG)") from None
    if settings.secrets_config is not None:
        from alai.server.secrets import config as secrets_config

        try:
            secrets_config.load(settings.secrets_config)
        except secrets_config.ConfigError as error:
            raise click.ClickException(f"{error} (ALAI_SECRETS_CONFIG)") from None
    if settings.master_key is not None:
        from alai.server.secrets import local

        try:
            local.parse_master_key(settings.master_key.get_secret_value())
        except local.MasterKeyError as error:
            raise click.ClickException(str(error)) from None
    import psycopg

    try:
        code = server_serve.run(settings)
    except (EmbeddedPostgresError, MigrationError, UnknownModule) as error:
        raise click.ClickException(str(error)) from None
    except psycopg.OperationalError as error:
        from alai.server.logging import redact_url_passwords

        reason = redact_url_passwords(str(error).strip().splitlines()[0] if str(error).strip() else "unknown error")
        raise click.ClickException(f"cannot reach the database ({reason}); check ALAI_DATABASE_URL") from None
    sys.exit(code)
