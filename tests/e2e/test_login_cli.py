"""`alai login` end to end against a real `alai serve`: no browser (pasted URL), whoami,
silent refresh with rotation, logout, admin CLI, and secrets kept out of the logs."""

import json
import subprocess

import pytest

from alai.client import credentials
from tests.support.oauth import sign_in_sync
from tests.support.processes import ALAI, run_cli

pytestmark = pytest.mark.e2e

PASSWORD = "canary-password-7f3a9c"  # must never appear in any log


@pytest.fixture
def server(serve):
    # A short access-token lifetime makes the CLI refresh on every call.
    process = serve(env={"ALAI_ADMIN_TOKEN": "e2e-admin-token", "ALAI_ACCESS_TOKEN_TTL_SECONDS": "30"})
    process.wait_ready()
    created = run_cli("admin", "user", "create", "bob", "--email", "bob@example.com", "--password-stdin",
                      input=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    return process


def login_without_browser(server_url: str) -> subprocess.CompletedProcess:
    cli = subprocess.Popen([*ALAI, "login", "--no-browser"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**__import__("os").environ, "ALAI_SERVER": server_url})
    url = cli.stdout.readline().strip()
    assert url.startswith(f"{server_url}/oauth/authorize?"), url
    location = sign_in_sync(url, "bob@example.com", PASSWORD)
    out, err = cli.communicate(location + "\n", timeout=30)
    return subprocess.CompletedProcess(cli.args, cli.returncode, out, err)


def test_login_whoami_refresh_logout(server):
    env = {"ALAI_SERVER": server.url}
    result = login_without_browser(server.url)
    assert result.returncode == 0, result.stderr
    assert f"Logged in to {server.url} as bob@example.com" in result.stdout
    assert "no OS keyring here" in result.stderr

    stored = credentials.load("default", server.url)
    assert stored is not None and stored.refresh_token
    first_refresh = stored.refresh_token

    whoami = run_cli("whoami", "--json", env=env)
    assert whoami.returncode == 0, whoami.stderr
    me = json.loads(whoami.stdout)
    assert me["name"] == "bob@example.com" and "mc:read" in me["scopes"] and me["kind"] == "user"
    # 30 s tokens are refreshed on use: the rotated refresh token was saved.
    assert credentials.load("default", server.url).refresh_token != first_refresh

    status = json.loads(run_cli("auth", "status", "--json", env=env).stdout)
    assert status["credential"] == "login" and status["logged_in_as"] == "bob@example.com"
    assert status["storage"] == "file" and status["warnings"]

    overridden = run_cli("auth", "status", "--json", env={**env, "ALAI_TOKEN": "e2e-admin-token"})
    assert "ALAI_TOKEN is set and overrides" in " ".join(json.loads(overridden.stdout)["warnings"])

    assert run_cli("logout", env=env).returncode == 0
    assert credentials.load("default", server.url) is None
    after = run_cli("whoami", env=env)
    assert after.returncode == 1 and "alai login" in after.stderr and len(after.stderr.strip().splitlines()) == 1

    server.stop()
    log = server.log()
    assert PASSWORD not in log
    assert first_refresh not in log and "e2e-admin-token" not in log


def test_revoked_session_says_run_alai_login(server):
    env = {"ALAI_SERVER": server.url}
    assert login_without_browser(server.url).returncode == 0
    stored = credentials.load("default", server.url)
    import httpx

    httpx.post(f"{server.url}/oauth/revoke", data={"token": stored.refresh_token})
    result = run_cli("whoami", env=env)
    assert result.returncode == 1
    assert "run `alai login`" in result.stderr and "Traceback" not in result.stderr


def test_pasted_url_with_the_wrong_state_is_refused(server):
    cli = subprocess.Popen([*ALAI, "login", "--no-browser"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**__import__("os").environ, "ALAI_SERVER": server.url})
    cli.stdout.readline()
    _, err = cli.communicate("http://localhost:1/callback?code=abc&state=forged\n", timeout=30)
    assert cli.returncode == 1 and "state mismatch" in err


def test_admin_token_cli_creates_lists_and_revokes(server):
    created = run_cli("admin", "token", "create", "--name", "forge-node", "--scopes", "node,runs:claim",
                      "--expires", "90d")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("alai_") and "shown only now" in created.stderr
    me = run_cli("whoami", "--json", env={"ALAI_SERVER": server.url, "ALAI_TOKEN": token})
    assert json.loads(me.stdout)["name"] == "forge-node"
    listed = json.loads(run_cli("admin", "token", "list", "--json").stdout)
    entry = next(t for t in listed if t["name"] == "forge-node")
    assert token not in json.dumps(listed)
    assert run_cli("admin", "token", "revoke", entry["id"]).returncode == 0
    bad = run_cli("admin", "token", "create", "--name", "x", "--scopes", "a", "--expires", "soon")
    assert bad.returncode == 2 and "90d" in bad.stderr
    dup = run_cli("admin", "user", "create", "bob", "--password-stdin", input="another-password\n")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    rotated = run_cli("admin", "keys", "rotate")
    assert rotated.returncode == 0 and "signing with new key" in rotated.stdout


def test_login_through_a_b2c_shaped_issuer(serve):
    """The external path end to end: policy in the path, B2C claims, localhost redirect, refresh."""
    import os

    from tests.fakes.b2c import FakeB2C
    from tests.support.oauth import sign_in_b2c_sync

    with FakeB2C(policy="B2C_1_signin", access_token_lifetime=20) as b2c:
        b2c.add_user("ana@alai.dev", "pw-ana-123456", name="Ana")
        server = serve(env={
            "ALAI_ADMIN_TOKEN": "e2e-admin-token", "ALAI_OIDC_AUTHORITY": b2c.authority,
            "ALAI_OIDC_AUDIENCE": b2c.api_audience, "ALAI_OIDC_CLIENT_ID": b2c.client_id,
            "ALAI_OIDC_SCOPES": b2c.full_scope, "ALAI_OIDC_B2C_POLICY": "B2C_1_signin",
            "ALAI_OIDC_ALLOWED_DOMAINS": "alai.dev",
        })
        server.wait_ready()
        cli = subprocess.Popen([*ALAI, "login", "--no-browser"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "ALAI_SERVER": server.url})
        url = cli.stdout.readline().strip()
        assert url.startswith(b2c.discovery()["authorization_endpoint"] + "?"), url
        assert "redirect_uri=http%3A%2F%2Flocalhost%3A" in url and "code_challenge_method=S256" in url
        location = sign_in_b2c_sync(url, "ana@alai.dev", "pw-ana-123456")
        out, err = cli.communicate(location + "\n", timeout=30)
        assert cli.returncode == 0, err
        assert "as ana@alai.dev" in out
        before = credentials.load("default", server.url).refresh_token
        whoami = run_cli("whoami", "--json", env={"ALAI_SERVER": server.url})
        assert whoami.returncode == 0, whoami.stderr
        assert json.loads(whoami.stdout)["name"] == "ana@alai.dev"
        # 20 s tokens: the CLI renewed at B2C's token endpoint and kept the rotated refresh token.
        assert credentials.load("default", server.url).refresh_token != before
