"""Fixtures shared by every tier.

- isolated_home (autouse): the user's home, config and data dirs are temporary.
- pg_admin_url (session): a real PostgreSQL; embedded unless ALAI_TEST_DATABASE_URL.
- template_database (session): a database with every migration applied.
- database_url (module): a fresh clone of the template for one test module.
- empty_database_url (function): an empty database (migration tests).
- settings / app / client: the app in-process, lifespan running, admin token set.
- serve (function): starts real `alai serve` processes on free loopback ports.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from alai.server.app import create_app
from alai.server.db import migrations
from alai.server.db.embedded import EPHEMERAL_TUNING, EmbeddedPostgres
from alai.server.settings import Settings
from tests.support import databases
from tests.support.processes import ServeProcess, start_serve

ADMIN_TOKEN = "test-admin-token-0123456789"
CLIENT_ENV_VARS = ("ALAI_SERVER", "ALAI_TOKEN", "ALAI_PROFILE", "ALAI_DATABASE_URL", "ALAI_MODULES",
                   "ALAI_ADMIN_TOKEN", "ALAI_HOST", "ALAI_PORT", "NO_COLOR")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ALAI_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("ALAI_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    for name in CLIENT_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    # Tokens go to the 0600 file, never to the keyring of whoever runs the tests.
    monkeypatch.setenv("ALAI_KEYRING", "off")
    return home


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    server_url = os.environ.get("ALAI_TEST_DATABASE_URL")
    if server_url:
        yield server_url
        return
    # Outside pytest's own tmp tree: pytest re-tightens that tree's permissions when
    # another pytest run starts, which would cut a server running as another user off.
    folder = Path(tempfile.mkdtemp(prefix="alai-test-pg-"))
    server = EmbeddedPostgres(folder, tuning=EPHEMERAL_TUNING)
    server.start()
    try:
        yield server.url("postgres")
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    name = databases.unique_name("alai_tpl")
    databases.create_database(pg_admin_url, name)
    try:
        migrations.migrate(databases.with_database(pg_admin_url, name))
        yield name
    finally:
        databases.drop_database(pg_admin_url, name)


@pytest.fixture(scope="module")
def database_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    name = databases.unique_name("alai_test")
    databases.create_database(pg_admin_url, name, template=template_database)
    try:
        yield databases.with_database(pg_admin_url, name)
    finally:
        databases.drop_database(pg_admin_url, name)


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    name = databases.unique_name("alai_empty")
    databases.create_database(pg_admin_url, name)
    try:
        yield databases.with_database(pg_admin_url, name)
    finally:
        databases.drop_database(pg_admin_url, name)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=SecretStr(database_url),
        data_dir=tmp_path / "data",
        admin_token=SecretStr(ADMIN_TOKEN),
        db_pool_min=1,
        db_pool_max=4,
        instance_heartbeat_seconds=60,
        public_url="http://alai.test",
        api_token_cache_seconds=0,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://alai.test", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as http:
        yield http


@pytest.fixture
async def anonymous_client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alai.test") as http:
        yield http


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Starts `alai serve` subprocesses; each is stopped (SIGKILL if need be) afterwards."""
    started: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, port: int | None = None) -> ServeProcess:
        env = {"ALAI_DATA_DIR": os.environ["ALAI_DATA_DIR"], **(env or {})}
        log_path = tmp_path / f"serve-{len(started)}.log"
        process = start_serve(*args, env=env, log_path=log_path, port=port)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.terminate()
            try:
                process.process.wait(30)
            except Exception:
                process.process.kill()
    for data_dir in {Path(process.env["ALAI_DATA_DIR"]) for process in started}:
        # A test that SIGKILLs a serve leaves its PostgreSQL running: taking the data
        # directory over (start) and giving it back (stop) shuts it down.
        if (data_dir / "postgres" / "postmaster.pid").exists():
            orphan = EmbeddedPostgres(data_dir)
            orphan.start()
            orphan.stop()
