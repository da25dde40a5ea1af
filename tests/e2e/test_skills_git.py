"""`git clone` and `git fetch` through a real `alai serve`'s read-only smart-HTTP
endpoint (/v1/skills/git), with a bearer token in http.extraHeader; refused without
one, refused to readers when private folders are configured, and push refused."""

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.integration.test_skills import build_upstream, git, write

pytestmark = pytest.mark.e2e

TOKEN = "skills-e2e-admin-token"


def git_client(*args: str, token: str | None = None, cwd: Path | None = None,
               extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The git binary as a user runs it: no prompts, no credential helpers."""
    header = ["-c", f"http.extraHeader=Authorization: Bearer {token}"] if token else []
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "",
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com", **(extra_env or {})}
    return subprocess.run(["git", "-c", "credential.helper=", *header, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    repo = build_upstream(tmp_path / "upstream")
    for number in range(40):  # enough history that an incremental fetch sends a gzip'd negotiation
        git(repo, "commit", "-q", "--allow-empty", "-m", f"history {number}")
    return repo


@pytest.fixture
def server(serve, database_url, upstream):
    process = serve(env={"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": TOKEN,
                         "ALAI_SKILLS_REPO": str(upstream), "ALAI_SKILLS_PRIVATE": "private/**",
                         "ALAI_SKILLS_REFRESH_SECONDS": "3600"})
    process.wait_ready()
    with api(process) as http:
        http.post("/v1/skills/refresh").raise_for_status()
    return process


def api(server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def test_clone_fetch_and_push_through_the_control_plane(server, upstream, tmp_path):
    url = f"{server.url}/v1/skills/git"
    clone = tmp_path / "clone"

    cloned = git_client("clone", "-q", url, str(clone), token=TOKEN)
    assert cloned.returncode == 0, cloned.stderr
    assert git(clone, "rev-parse", "HEAD") == git(upstream, "rev-parse", "main")
    assert git(clone, "symbolic-ref", "HEAD") == "refs/heads/main"
    for path in ("README.md", "skills/writing/SKILL.md", "agents/reviewer.md", "private/keys.md", "data/blob.bin"):
        assert (clone / path).read_bytes() == (upstream / path).read_bytes(), path
    assert os.access(clone / "scripts/run.sh", os.X_OK)
    assert "origin/dev" in git(clone, "branch", "-r") and git(clone, "tag") == "v1"
    assert git(clone, "rev-parse", "v1^{commit}") == git(upstream, "rev-parse", "v1^{commit}")

    # Local commits the server does not know: git sends them as haves, in rounds that
    # grow past 1 KiB, and then gzips its request.
    git(clone, "checkout", "-q", "-b", "scratch")
    for number in range(60):
        git(clone, "commit", "-q", "--allow-empty", "-m", f"local {number}")
    git(clone, "checkout", "-q", "main")
    git(upstream, "branch", "topic", "main")
    write(upstream, "rules/after.md", "A later rule.\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "later")
    with api(server) as http:
        assert http.post("/v1/skills/refresh").json()["head_commit"] == git(upstream, "rev-parse", "main")
    fetched = git_client("-C", str(clone), "pull", "--ff-only", "-q", token=TOKEN,
                         extra_env={"GIT_TRACE_CURL": "1", "GIT_TRACE_CURL_NO_DATA": "1"})
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    assert (clone / "rules/after.md").read_text() == "A later rule.\n"
    assert git(clone, "rev-parse", "HEAD") == git(upstream, "rev-parse", "main")
    assert "origin/topic" in git(clone, "branch", "-r")
    assert "Content-Encoding: gzip" in fetched.stderr  # git compressed its negotiation; the server read it
    assert TOKEN not in fetched.stderr  # (git redacts it in traces)

    write(clone, "pushed.md", "no\n")
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "try to push")
    pushed = git_client("-C", str(clone), "push", "origin", "HEAD:main", token=TOKEN)
    assert pushed.returncode != 0
    assert "read-only" in pushed.stderr and "403" in pushed.stderr
    assert not (upstream / "pushed.md").exists()


def test_clone_is_refused_without_a_token_or_the_private_scope(server, tmp_path):
    url = f"{server.url}/v1/skills/git"
    anonymous = git_client("clone", "-q", url, str(tmp_path / "anonymous"))
    assert anonymous.returncode != 0
    assert "Authentication failed" in anonymous.stderr or "could not read Username" in anonymous.stderr
    assert not (tmp_path / "anonymous").exists()

    wrong = git_client("clone", "-q", url, str(tmp_path / "wrong"), token="not-a-token")
    assert wrong.returncode != 0

    with api(server) as http:
        reader = http.post("/v1/identity/tokens", json={"name": "reader", "scopes": ["skills:read"]}).json()["token"]
    refused = git_client("clone", "-q", url, str(tmp_path / "reader"), token=reader)
    assert refused.returncode != 0
    # git prints the server's text/plain explanation
    assert "skills:private" in refused.stderr and "/v1/skills/archive" in refused.stderr, refused.stderr
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {reader}"}, timeout=30) as http:
        archive = http.get("/v1/skills/archive")
        assert archive.status_code == 200 and archive.headers["content-type"] == "application/gzip"


def test_a_control_plane_mirrors_another_over_http_with_a_token_from_the_secrets_module(server, serve, database_url,
                                                                                          upstream):
    """The http(s) path of the mirror: a second `alai serve` whose ALAI_SKILLS_REPO is the
    first one's git endpoint, its token a secret:// reference (read at each fetch)."""
    downstream = serve(env={"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": TOKEN,
                            "ALAI_MASTER_KEY": "u2l8uGf6n6Ri6yVVbmFrOkhVSnx2kU4lIoPp6XYn9s0=",
                            "ALAI_SKILLS_REPO": f"{server.url}/v1/skills/git",
                            "ALAI_SKILLS_TOKEN": "secret://skills/upstream-token",
                            "ALAI_SKILLS_REFRESH_SECONDS": "3600"})
    downstream.wait_ready()
    with api(downstream) as http:
        before = http.post("/v1/skills/refresh").json()
        assert before["head_commit"] is None and "skills/upstream-token" in before["error"]
        stored = http.put("/v1/secrets/values/skills/upstream-token", json={"value": f"Bearer {TOKEN}"})
        assert stored.status_code == 200, stored.text
        status = http.post("/v1/skills/refresh").json()
        assert status["error"] is None and status["head_commit"] == git(upstream, "rev-parse", "main")
        assert status["repo"] == f"{server.url}/v1/skills/git"
        assert http.get("/v1/skills/files/private/keys.md").content == b"very private\n"  # admin clone: all of it

        stored = http.put("/v1/secrets/values/skills/upstream-token", json={"value": "Bearer wrong"})
        failed = http.post("/v1/skills/refresh").json()
        assert "HTTPUnauthorized" in failed["error"] and failed["head_commit"] == status["head_commit"]
    assert "wrong" not in failed["error"] and TOKEN not in downstream.log()
