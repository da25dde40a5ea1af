"""`alai serve` as a real process: embedded PostgreSQL, restarts, a second owner, signals, kills."""

import json
import signal
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from alai.server.db import migrations
from alai.server.db.embedded import EmbeddedPostgres
from tests.support.processes import run_cli

pytestmark = pytest.mark.e2e


def postgres_running(data_dir: Path) -> bool:
    return EmbeddedPostgres.url_of_running(data_dir) is not None


def test_embedded_lifecycle_keeps_data_and_stops_cleanly(serve, isolated_home):
    data_dir = isolated_home / "data"
    first = serve()
    first.wait_ready()
    url = EmbeddedPostgres.url_of_running(data_dir)
    assert url is not None
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('survives a restart')")

    # `alai status` on this machine finds the server's local admin token by itself.
    status = run_cli("status", env={"ALAI_SERVER": first.url, "COLUMNS": "200"})
    assert status.returncode == 0, status.stderr
    assert "database" in status.stdout and "ok" in status.stdout and "(embedded)" in status.stdout
    as_json = run_cli("status", "--json", env={"ALAI_SERVER": first.url})
    assert as_json.returncode == 0
    report = json.loads(as_json.stdout)
    assert report["state"] == "ok" and report["database"]["embedded"] is True
    assert {"ops", "identity"} <= {m["name"] for m in report["modules"]}

    assert first.stop(signal.SIGTERM) == 0
    assert not postgres_running(data_dir), "SIGTERM must stop the embedded PostgreSQL too"
    assert "embedded PostgreSQL stopped" in first.log()

    second = serve()
    second.wait_ready()
    with psycopg.connect(EmbeddedPostgres.url_of_running(data_dir)) as conn:
        assert conn.execute("SELECT note FROM kept").fetchone()[0] == "survives a restart"
    assert second.log().count("applying ops/0001_instances") == 0  # nothing left to migrate
    assert second.stop(signal.SIGINT) == 0
    assert not postgres_running(data_dir)


def test_second_serve_on_the_same_data_dir_refuses(serve, isolated_home):
    owner = serve()
    owner.wait_ready()
    intruder = serve()
    assert intruder.process.wait(60) == 1
    log = intruder.log()
    assert f"data directory {isolated_home / 'data'} is in use by another alai process (pid {owner.process.pid})" in log
    assert "Traceback" not in log
    # The owner is unharmed.
    assert httpx.get(f"{owner.url}/readyz").status_code == 200


def test_recovers_after_being_killed(serve, isolated_home):
    victim = serve()
    victim.wait_ready()
    victim.process.send_signal(signal.SIGKILL)
    victim.process.wait(10)
    assert postgres_running(isolated_home / "data")  # orphaned, as SIGKILL leaves it
    heir = serve()
    heir.wait_ready()
    assert "Traceback" not in heir.log()
    assert heir.stop() == 0
    assert not postgres_running(isolated_home / "data")


def test_uses_the_database_url_when_given(serve, database_url, isolated_home):
    server = serve(env={"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": "e2e-token"})
    server.wait_ready()
    report = httpx.get(f"{server.url}/v1/status", headers={"Authorization": "Bearer e2e-token"}).json()
    assert report["database"]["embedded"] is False
    assert not (isolated_home / "data" / "postgres").exists()
    assert server.stop() == 0


def test_modules_selection_is_checked(serve):
    server = serve(env={"ALAI_MODULES": "ops,nonsense"})
    assert server.process.wait(60) == 1
    assert "unknown module(s) in ALAI_MODULES: nonsense" in server.log()
    assert "Traceback" not in server.log()


def test_logs_are_json_with_request_ids_and_no_token(serve):
    server = serve()
    server.wait_ready()
    token = (Path(server.env["ALAI_DATA_DIR"]) / "admin-token").read_text().strip()
    response = httpx.get(f"{server.url}/v1/status", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "e2e-req-1"})
    assert response.status_code == 200
    server.stop()
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("logger") == "alai.access" and line.get("request_id") == "e2e-req-1"]
    assert access and access[0]["route"] == "/v1/status" and access[0]["status"] == 200
    assert token not in server.log()


def test_status_cli_without_a_server_says_what_to_do():
    result = run_cli("status", env={"ALAI_SERVER": "http://127.0.0.1:9"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: cannot reach http://127.0.0.1:9 (connection refused): is `alai serve` running?"
    ]


def test_admin_migrate_status_and_apply(isolated_home, empty_database_url):
    everything = [m.key for m in migrations.discover()]
    env = {"ALAI_DATABASE_URL": empty_database_url}
    before = run_cli("admin", "migrate", "--status", "--json", env=env)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["pending"] == everything
    applied = run_cli("admin", "migrate", env=env)
    assert applied.returncode == 0 and f"{len(everything)} migration(s) applied" in applied.stdout
    again = run_cli("admin", "migrate", env=env)
    assert "database is up to date" in again.stdout
    after = json.loads(run_cli("admin", "migrate", "--status", "--json", env=env).stdout)
    assert after["pending"] == [] and after["applied"] == everything


def test_admin_migrate_on_the_embedded_database_starts_and_stops_it(isolated_home):
    result = run_cli("admin", "migrate")
    assert result.returncode == 0, result.stderr
    assert not postgres_running(isolated_home / "data")
    status = json.loads(run_cli("admin", "migrate", "--status", "--json").stdout)
    assert status["pending"] == []


def test_cold_and_warm_start_reach_readiness(serve):
    # Speed is measured in bench/cold_start.py; this only proves both paths work.
    first = serve()
    first.wait_ready()
    first.stop()
    started = time.monotonic()
    warm = serve()
    warm.wait_ready()
    assert time.monotonic() - started < 60
    warm.stop()


def test_unreachable_database_url_is_one_line(serve):
    server = serve(env={"ALAI_DATABASE_URL": "postgresql://postgres:hunter2@127.0.0.1:9/alai?connect_timeout=2"})
    assert server.process.wait(60) == 1
    log = server.log()
    assert "cannot reach the database" in log and "check ALAI_DATABASE_URL" in log
    assert "hunter2" not in log and "Traceback" not in log


def test_python_dash_m_alai_runs_the_cli():
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("alai ")


@pytest.mark.parametrize(("content", "message"), [
    ("backends: [{name: a, kind: llama, url: 'http://x'}]", "backends.0.kind"),
    ("models: {m: {routes: [{backend: nowhere}]}}", "unknown backend 'nowhere'"),
    (None, "cannot read the gateway configuration"),
])
def test_a_bad_gateway_configuration_stops_serve_in_one_line(tmp_path, content, message):
    path = tmp_path / "gateway.yaml"
    if content is not None:
        path.write_text(content)
    result = run_cli("serve", "--port", "9", env={"ALAI_GATEWAY_CONFIG": str(path),
                                                   "ALAI_DATA_DIR": str(tmp_path / "data")})
    assert result.returncode == 1 and message in result.stderr and "ALAI_GATEWAY_CONFIG" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "data").exists()
