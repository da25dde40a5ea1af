"""`alai serve`: the control plane in one process, with its own PostgreSQL if none is given.

Order of shutdown matters: uvicorn stops taking requests and runs the app's
lifespan exit (background work, pool) first; only then is the embedded PostgreSQL
stopped. SIGTERM (containers) and SIGINT (Ctrl-C) both lead there and exit 0.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
from pathlib import Path

import structlog
import uvicorn
from pydantic import SecretStr

from alai.server import logging as alai_logging
from alai.server.db.embedded import EmbeddedPostgres
from alai.server.settings import Settings

log = structlog.get_logger("alai.serve")
ADMIN_TOKEN_FILE = "admin-token"
MASTER_KEY_FILE = "master-key"


class GracefulExit(SystemExit):
    pass


def _exit_on_signal(signum: int, _frame: object) -> None:
    # Raised once uvicorn has finished its graceful shutdown and hands the signal
    # back (it re-raises captured signals); unwinds through our `finally` blocks.
    raise GracefulExit(0)


class DrainingServer(uvicorn.Server):
    """Tells the app it is shutting down as soon as the signal arrives, before uvicorn
    waits for open connections: streams end, clients reconnect to another replica."""

    def handle_exit(self, sig: int, frame: object) -> None:
        app = self.config.app
        if hasattr(app, "state"):
            app.state.draining = True
        super().handle_exit(sig, frame)  # type: ignore[arg-type]


def load_or_create_admin_token(path: Path, make=lambda: secrets.token_urlsafe(32)) -> str:
    """The local admin token (or another local secret): created once, readable only by its owner."""
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def run(settings: Settings) -> int:
    alai_logging.configure(level=settings.log_level, fmt=settings.log_format)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _exit_on_signal)

    embedded: EmbeddedPostgres | None = None
    try:
        if settings.database_url is None:
            owner = EmbeddedPostgres(settings.data_dir)
            url = owner.start()  # stops what it started if it fails half-way
            embedded = owner
            log.info("embedded PostgreSQL running", data_dir=str(settings.data_dir))
            updates: dict[str, object] = {"database_url": SecretStr(url), "embedded_database": True}
            if settings.admin_token is None:
                token_file = settings.admin_token_file or settings.data_dir / ADMIN_TOKEN_FILE
                updates["admin_token"] = SecretStr(load_or_create_admin_token(token_file))
                updates["admin_token_file"] = token_file
                log.info("local admin token ready; the CLI on this machine uses it", file=str(token_file))
            if settings.master_key is None:  # the local secrets store's key, kept beside the database
                from alai.server.secrets.local import new_master_key

                updates["master_key"] = SecretStr(load_or_create_admin_token(
                    settings.data_dir / MASTER_KEY_FILE, make=new_master_key))
            settings = settings.model_copy(update=updates)

        if settings.migrate_on_start:
            # Here rather than in the app's lifespan, so that a failure is one clear line.
            from alai.server.db import migrations

            applied = migrations.migrate(settings.database_url.get_secret_value(), log=lambda m: log.info(m))
            if applied:
                log.info("migrations applied", count=len(applied))
            settings = settings.model_copy(update={"migrate_on_start": False})

        from alai.server.app import create_app

        app = create_app(settings)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            lifespan="on",
            proxy_headers=True,
            server_header=False,
            timeout_graceful_shutdown=20,
            # Streams send the same small JSON to many subscribers: compressing it per
            # connection was a third of the server's CPU (bench/hive_latency.py).
            ws_per_message_deflate=False,
            # Named, not "auto": stream fan-out writes prepared frames to this protocol's
            # connections (server/ws_direct.py).
            ws="websockets-sansio",
        )
        server = DrainingServer(config)
        server.run()
        if not server.started:
            log.error("the control plane did not start; see the errors above")
            return 1
        return 0
    except GracefulExit:
        return 0
    finally:
        if embedded is not None:
            embedded.stop()
            log.info("embedded PostgreSQL stopped")
        sys.stderr.flush()
