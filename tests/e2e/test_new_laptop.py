"""A new laptop: an empty home directory, `alai login` (the built-in issuer, paste flow),
and the machine is ready — profile saved, ~/.claude cloned from the skills repository,
secrets and the control plane checked — so that `alai doctor` passes. And the retry:
a step that fails stops the login, and `alai login --resume` carries on without a
second sign-in."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.e2e.test_skills_cli import git, make_upstream, skills_server_env, wait_mirrored
from tests.support.oauth import sign_in_sync
from tests.support.processes import ALAI, run_cli

pytestmark = pytest.mark.e2e

PASSWORD = "laptop-password-5b1e"


@pytest.fixture
def server(serve, database_url, tmp_path):
    upstream = make_upstream(tmp_path / "system")
    process = serve(env={"ALAI_DATABASE_URL": database_url, **skills_server_env(upstream)})
    process.wait_ready()
    wait_mirrored(process.url, git(upstream, "rev-parse", "HEAD"))
    created = run_cli("admin", "user", "create", "ana", "--email", "ana@example.com", "--password-stdin",
                      input=PASSWORD + "\n", env={"ALAI_DATABASE_URL": database_url})
    if created.returncode != 0:  # the module's database is shared: ana may exist from the other test
        assert "already exists" in created.stderr, created.stderr
    process.upstream = upstream
    return process


@pytest.fixture
def laptop(tmp_path) -> dict[str, str]:
    """The environment of a machine that has never run alai: a fresh home, nothing else."""
    home = tmp_path / "laptop"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ALAI_", "XDG_"))}
    # ALAI_KEYRING=off: the logins go to a 0600 file in the new home, not the keyring of whoever runs the tests.
    return {**env, "HOME": str(home), "ALAI_KEYRING": "off", "NO_COLOR": "1"}


def alai(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ALAI, *args], env=env, capture_output=True, text=True, timeout=90)


def login(env: dict[str, str], server_url: str, *args: str) -> subprocess.CompletedProcess:
    cli = subprocess.Popen([*ALAI, "login", "--no-browser", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env={**env, "ALAI_SERVER": server_url})
    url = cli.stdout.readline().strip()
    assert url.startswith(f"{server_url}/oauth/authorize?"), (url, cli.stderr.read() if cli.poll() else "")
    out, err = cli.communicate(sign_in_sync(url, "ana@example.com", PASSWORD) + "\n", timeout=90)
    return subprocess.CompletedProcess(cli.args, cli.returncode, url + "\n" + out, err)


def tracked(repo: Path) -> dict[str, bytes]:
    return {name: (repo / name).read_bytes() for name in git(repo, "ls-files").splitlines()}


def test_a_new_laptop_is_ready_after_alai_login(server, laptop):
    home = Path(laptop["HOME"])
    result = login(laptop, server.url)
    assert result.returncode == 0, result.stderr
    assert "Logged in to" in result.stdout and "as ana@example.com" in result.stdout
    steps = [line for line in result.stderr.splitlines() if line.startswith("[")]
    assert [line.split(":")[0] for line in steps] == ["[1/4] profile", "[2/4] skills", "[3/4] secrets",
                                                      "[4/4] status"], result.stderr
    assert "cloned 4 files into ~/.claude (main @ " in steps[1]
    assert "FAILED" not in result.stderr and "Ready (skills in " in result.stdout

    claude = home / ".claude"
    assert tracked(claude) == tracked(server.upstream)
    saved = tomllib.loads((home / ".config" / "alai" / "config.toml").read_text())
    assert saved["profiles"]["default"]["server"] == server.url
    access_token = (home / ".config" / "alai" / "credentials.json").read_text()
    assert "access_token" in access_token and "Bearer" not in (claude / ".git" / "config").read_text()

    # No ALAI_SERVER from here on: the saved profile and login are enough.
    doctor = alai(laptop, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert doctor.stdout.strip().endswith("all checks passed")
    assert "ok   skills        ~/.claude at main @ " in doctor.stdout
    assert "ok   token         ana@example.com (login)" in doctor.stdout

    # Again: nothing to sign in, every step passes at once.
    again = alai(laptop, "login", "--resume")
    assert again.returncode == 0, again.stderr
    assert "Already logged in" in again.stderr and "up to date: ~/.claude" in again.stderr
    assert "oauth/authorize" not in again.stdout


def test_a_failed_step_stops_the_login_and_resume_carries_on(server, laptop):
    home = Path(laptop["HOME"])
    claude = home / ".claude"
    claude.mkdir()
    (claude / "settings.json").write_text('{"theme": "dark"}')  # Claude Code was here first

    first = login(laptop, server.url)
    assert first.returncode == 1 and "Logged in to" in first.stdout
    assert "[1/4] profile: " in first.stderr
    assert "[2/4] skills: FAILED: ~/.claude already holds files and is not a clone of the skills" in first.stderr
    assert "[3/4]" not in first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == ["Error: this machine is not ready: step 2/4 (skills) failed; fix what it says, then run "
                      "`alai login --resume` to carry on from there"]
    assert [p.name for p in claude.iterdir()] == ["settings.json"]

    claude.rename(home / ".claude.before-alai")
    resumed = alai(laptop, "login", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "oauth/authorize" not in resumed.stdout and "Already logged in" in resumed.stderr
    assert "[2/4] skills: cloned 4 files into ~/.claude" in resumed.stderr
    assert tracked(claude) == tracked(server.upstream)
    assert alai(laptop, "doctor").returncode == 0

    # A login that no longer works is signed in again, not resumed.
    (home / ".config" / "alai" / "credentials.json").unlink()
    cli = subprocess.Popen([*ALAI, "login", "--resume", "--no-browser"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=laptop)
    url = cli.stdout.readline().strip()
    cli.communicate(sign_in_sync(url, "ana@example.com", PASSWORD) + "\n", timeout=90)
    assert url.startswith(f"{server.url}/oauth/authorize?") and cli.returncode == 0
