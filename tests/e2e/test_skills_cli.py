"""`alai skills` and `alai doctor` against a real `alai serve` mirroring a git repository
built here with the `git` binary: clone, fast-forward, refusals that change nothing,
--dry-run, ls/cat/status, and the doctor's verdicts with their fixes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ALAI, run_cli

pytestmark = pytest.mark.e2e

TOKEN = "skills-e2e-admin-token"
MASTER_KEY = "u2l8uGf6n6Ri6yVVbmFrOkhVSnx2kU4lIoPp6XYn9s0="
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Upstream", "GIT_AUTHOR_EMAIL": "up@example.com",
                "GIT_COMMITTER_NAME": "Upstream", "GIT_COMMITTER_EMAIL": "up@example.com"}
FILES = {
    "CLAUDE.md": "# Rules\n\nBe brief.\n",
    "agents/writer.md": "---\nname: writer\n---\nYou write.\n",
    "skills/review/SKILL.md": "---\nname: review\n---\nReview code.\n",
    "skills/review/check.sh": "#!/bin/sh\necho ok\n",
}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull}
    done = subprocess.run(["git", "-C", str(cwd), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str | bytes], message: str) -> str:
    for name, content in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_upstream(folder: Path, files: dict[str, str | bytes] | None = None) -> Path:
    folder.mkdir(parents=True)
    git(folder, "init", "-q", "-b", "main")
    commit(folder, files or FILES, "first rules")
    return folder


def wait_mirrored(server_url: str, commit_id: str, token: str = TOKEN, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        status = httpx.get(f"{server_url}/v1/skills/status", headers={"Authorization": f"Bearer {token}"},
                           timeout=10).json()
        if status.get("head_commit") == commit_id:
            return status
        time.sleep(0.1)
    raise AssertionError(f"the mirror did not reach {commit_id}: {status}")


def refresh(server_url: str) -> dict:
    response = httpx.post(f"{server_url}/v1/skills/refresh", headers={"Authorization": f"Bearer {TOKEN}"},
                          timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def skills_server_env(upstream: Path, **extra: str) -> dict[str, str]:
    return {"ALAI_ADMIN_TOKEN": TOKEN, "ALAI_MASTER_KEY": MASTER_KEY, "ALAI_SKILLS_REPO": str(upstream), **extra}


@pytest.fixture
def upstream(tmp_path) -> Path:
    return make_upstream(tmp_path / "upstream")


@pytest.fixture
def server(serve, database_url, upstream):
    process = serve(env={"ALAI_DATABASE_URL": database_url, **skills_server_env(upstream)})
    process.wait_ready()
    wait_mirrored(process.url, git(upstream, "rev-parse", "HEAD"))
    return process


@pytest.fixture
def cli_env(server, tmp_path) -> dict[str, str]:
    return {"ALAI_SERVER": server.url, "ALAI_TOKEN": TOKEN, "NO_COLOR": "1"}


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_sync_clones_fast_forwards_and_never_overwrites(server, upstream, cli_env, tmp_path):
    dest = tmp_path / "home" / ".claude"
    first = run_cli("skills", "sync", "--dest", str(dest), env=cli_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().startswith("cloned 4 files into ~/.claude (main @ ")
    assert "cloning " in first.stderr
    assert (dest / "skills" / "review" / "SKILL.md").read_text() == FILES["skills/review/SKILL.md"]
    assert os.access(dest / "skills" / "review" / "check.sh", os.X_OK) is False  # as committed (0644)
    assert TOKEN not in (dest / ".git" / "config").read_text()

    again = run_cli("skills", "sync", "--dest", str(dest), env=cli_env)
    assert again.returncode == 0 and again.stdout.startswith("up to date: ~/.claude (main @ ")

    second = commit(upstream, {"skills/deploy/SKILL.md": "Deploy.\n", "CLAUDE.md": "# Rules\n\nBe briefer.\n"},
                    "add deploy, tighten rules")
    assert refresh(server.url)["head_commit"] == second
    before = git(dest, "rev-parse", "HEAD")
    dry = run_cli("skills", "sync", "--dest", str(dest), "--dry-run", env=cli_env)
    assert dry.returncode == 0, dry.stderr
    assert "skills/deploy/SKILL.md" in dry.stdout and "add deploy, tighten rules" in dry.stdout
    assert "2 files changed (+2 -1), 1 commit: would fast-forward to main @ " in dry.stdout
    assert git(dest, "rev-parse", "HEAD") == before and not (dest / "skills" / "deploy").exists()

    forward = run_cli("skills", "sync", "--dest", str(dest), env=cli_env)
    assert forward.returncode == 0, forward.stderr
    assert forward.stdout.strip() == f"2 files changed (+2 -1), 1 commit: ~/.claude is at main @ {second[:7]}"
    assert git(dest, "rev-parse", "HEAD") == second and (dest / "skills" / "deploy" / "SKILL.md").exists()

    # A local uncommitted change, and news upstream: the sync refuses and changes nothing.
    third = commit(upstream, {"CLAUDE.md": "# Rules\n\nBe brief again.\n"}, "third")
    refresh(server.url)
    (dest / "CLAUDE.md").write_text("# my rules\n")
    refused = run_cli("skills", "sync", "--dest", str(dest), env=cli_env)
    error = one_line_error(refused)
    assert "uncommitted changes to 1 file (CLAUDE.md)" in error and "git -C ~/.claude stash" in error
    assert (dest / "CLAUDE.md").read_text() == "# my rules\n" and git(dest, "rev-parse", "HEAD") == second

    git(dest, "checkout", "--", ".")
    assert run_cli("skills", "sync", "--dest", str(dest), env=cli_env).returncode == 0
    assert git(dest, "rev-parse", "HEAD") == third

    as_json = json.loads(run_cli("skills", "sync", "--dest", str(dest), "--json", env=cli_env).stdout)
    assert as_json["action"] == "up-to-date" and as_json["after"] == third


def test_sync_refuses_a_foreign_destination_and_a_bad_token(server, cli_env, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "settings.json").write_text("{}")
    error = one_line_error(run_cli("skills", "sync", "--dest", str(foreign), env=cli_env))
    assert "already holds files and is not a clone of the skills" in error and "--dest" in error
    assert sorted(p.name for p in foreign.iterdir()) == ["settings.json"]

    bad = one_line_error(run_cli("skills", "sync", "--dest", str(tmp_path / "x"),
                                 env={**cli_env, "ALAI_TOKEN": "not-a-token"}))
    assert "HTTP 401" in bad and not (tmp_path / "x").exists()


def test_ls_cat_and_status(server, upstream, cli_env):
    commit(upstream, {"bin/blob.dat": b"\x00\x01\xffraw bytes, no final newline"}, "binary")
    head = refresh(server.url)["head_commit"]

    top = run_cli("skills", "ls", env=cli_env)
    assert top.returncode == 0, top.stderr
    assert [line.split()[-1] for line in top.stdout.splitlines()[1:]] == ["CLAUDE.md", "agents/", "bin/", "skills/"]
    deep = json.loads(run_cli("skills", "ls", "skills", "-r", "--json", env=cli_env).stdout)
    assert deep["commit"] == head
    assert {e["path"] for e in deep["entries"] if e["type"] == "blob"} == {"skills/review/SKILL.md",
                                                                           "skills/review/check.sh"}
    raw = subprocess.run([*ALAI, "skills", "cat", "bin/blob.dat"], env={**os.environ, **cli_env},
                         capture_output=True, timeout=60)
    assert raw.returncode == 0 and raw.stdout == b"\x00\x01\xffraw bytes, no final newline"
    first = run_cli("skills", "cat", "CLAUDE.md", "--ref", git(upstream, "rev-parse", "HEAD~1"), env=cli_env)
    assert first.stdout == FILES["CLAUDE.md"]
    assert "HTTP 404" in one_line_error(run_cli("skills", "cat", "nope.md", env=cli_env))
    assert "not a path inside" in one_line_error(run_cli("skills", "cat", "../etc/passwd", env=cli_env))

    status = run_cli("skills", "status", env=cli_env)
    assert status.returncode == 0, status.stderr
    assert f"main @ {head[:12]}" in status.stdout and str(upstream) in status.stdout
    assert json.loads(run_cli("skills", "status", "--json", env=cli_env).stdout)["head_commit"] == head


def doctor(dest: Path, env: dict[str, str], *extra: str) -> tuple[int, dict[str, dict]]:
    result = run_cli("doctor", "--dest", str(dest), "--json", *extra, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is (result.returncode == 0)
    return result.returncode, {check["name"]: check for check in report["checks"]}


def test_doctor_passes_then_names_the_fix(server, upstream, cli_env, tmp_path):
    dest = tmp_path / "home" / ".claude"
    code, checks = doctor(dest, cli_env)
    assert code == 1 and checks["skills"]["state"] == "fail" and checks["skills"]["fix"] == "run `alai skills sync`"

    assert run_cli("skills", "sync", "--dest", str(dest), env=cli_env).returncode == 0
    plain = run_cli("doctor", "--dest", str(dest), env=cli_env)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert plain.stdout.strip().endswith("all checks passed")
    lines = plain.stdout.splitlines()
    for name in ("profile", "server", "token", "clock", "skills", "secrets", "control plane"):
        assert any(line.startswith("ok   " + name) for line in lines), plain.stdout
    assert any(line.startswith("warn proxy") and "not running: alai start" in line for line in lines)
    code, checks = doctor(dest, cli_env, "--require-proxy")
    assert code == 1 and checks["proxy"]["state"] == "fail"

    # The server moves on: behind, and the fix is a sync.
    commit(upstream, {"new.md": "new\n"}, "news")
    refresh(server.url)
    code, checks = doctor(dest, cli_env)
    assert code == 1 and "behind the server" in checks["skills"]["detail"]
    assert checks["skills"]["fix"] == "run `alai skills sync`"
    assert run_cli("skills", "sync", "--dest", str(dest), env=cli_env).returncode == 0

    # A local commit diverges from the server.
    (dest / "CLAUDE.md").write_text("# mine\n")
    git(dest, "commit", "-q", "-am", "local tweak")
    code, checks = doctor(dest, cli_env)
    assert code == 1 and "has local commits" in checks["skills"]["detail"]
    assert "reset --keep origin/main" in checks["skills"]["fix"]
    git(dest, "reset", "-q", "--hard", "HEAD~1")

    # A bad token: the token check fails with its fix, what needs it is skipped.
    code, checks = doctor(dest, {**cli_env, "ALAI_TOKEN": "expired-or-wrong"})
    assert code == 1 and checks["token"]["state"] == "fail"
    assert checks["token"]["fix"] == "ALAI_TOKEN is refused: replace it or unset it"
    assert checks["skills"]["state"] == "skip" and checks["server"]["state"] == "ok"

    # The server gone.
    server.stop()
    code, checks = doctor(dest, cli_env)
    assert code == 1 and "cannot reach" in checks["server"]["detail"]
    assert checks["server"]["fix"] == "is `alai serve` running?"
