"""The skills module in process: a real git repository built by the test (git binary),
mirrored by the server with dulwich; status, refs, trees, files (ETag/304), archives,
private folders, refresh, webhook, an upstream that goes away, agents for the runner,
and the smart-HTTP endpoint driven by hand (gzip bodies, refusals)."""

import contextlib
import gzip
import hashlib
import hmac
import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from alai.server.app import create_app
from alai.server.skills.privacy import BadGlob, PrivatePaths
from tests.support.waiting import wait_for

WEBHOOK_SECRET = "hook-secret-0123"
REVIEWER = """---
name: reviewer
description: Reviews changes
model: qwen2.5-coder:32b
---
You review code.
"""
PLANNER = """---
name: planner
---
You plan.
"""
BROKEN = """---
name: [this is: not valid
---
Nothing.
"""


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com", "GIT_CONFIG_NOSYSTEM": "1"}
    done = subprocess.run(["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false",
                           "-c", "tag.gpgsign=false", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def write(root: Path, path: str, text: str | bytes) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(text if isinstance(text, bytes) else text.encode())


def build_upstream(root: Path) -> Path:
    """main: two commits (v1 tags the first), dev: one more; agents, private folders."""
    root.mkdir(parents=True)
    git(root, "init", "-q")
    write(root, "README.md", "# Skills\nfirst\n")
    write(root, "skills/writing/SKILL.md", "---\nname: writing\n---\nWrite well.\n")
    write(root, "rules/style.md", "Be brief.\n")
    write(root, "agents/reviewer.md", REVIEWER)
    write(root, "agents/planner.md", PLANNER)
    write(root, "agents/broken.md", BROKEN)
    write(root, "agents/notes.txt", "not an agent\n")
    write(root, "private/keys.md", "very private\n")
    write(root, "team/secrets/token.txt", "t0ken\n")
    write(root, "team/notes.md", "team notes\n")
    write(root, "data/blob.bin", bytes(range(256)))
    write(root, "scripts/run.sh", "#!/bin/sh\necho hi\n")
    (root / "scripts/run.sh").chmod(0o755)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    git(root, "tag", "-a", "v1", "-m", "version 1")
    write(root, "README.md", "# Skills\nsecond\n")
    git(root, "commit", "-q", "-am", "second")
    git(root, "checkout", "-q", "-b", "dev")
    write(root, "dev-only.md", "dev\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "dev work")
    git(root, "checkout", "-q", "main")
    return root


@pytest.fixture
def upstream(tmp_path: Path) -> Path:
    return build_upstream(tmp_path / "upstream")


@pytest.fixture
def settings(settings, upstream):
    settings.skills_repo = str(upstream)
    settings.skills_private = "private/**, */secrets/*"
    settings.skills_webhook_secret = SecretStr(WEBHOOK_SECRET)
    settings.skills_refresh_seconds = 3600
    return settings


@contextlib.asynccontextmanager
async def running(settings, **changes):
    """Another app, with settings changed (the `app` fixture's are fixed per test)."""
    application = create_app(settings.model_copy(update=changes))
    async with application.router.lifespan_context(application):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://alai.test",
                                     headers={"Authorization": "Bearer test-admin-token-0123456789"}) as http:
            yield http


async def refreshed(client) -> dict:
    response = await client.post("/v1/skills/refresh")
    assert response.status_code == 200, response.text
    return response.json()


async def token_with(client, *scopes: str) -> dict:
    created = await client.post("/v1/identity/tokens", json={"name": f"skills-{'-'.join(s.replace(':', '') for s in scopes)}",
                                                            "scopes": list(scopes)})
    assert created.status_code in (200, 201), created.text
    return {"Authorization": f"Bearer {created.json()['token']}"}


async def test_status_and_refs_describe_the_mirror(client, upstream):
    status = await refreshed(client)
    assert status["configured"] is True and status["repo"] == str(upstream)
    assert status["head_ref"] == "refs/heads/main" and status["head_commit"] == git(upstream, "rev-parse", "main")
    assert status["error"] is None and status["refs"] == 3 and 0 <= status["age_seconds"] < 30
    assert status["last_success_at"] and status["last_fetch_at"]
    assert (await client.get("/v1/skills/status")).json()["head_commit"] == status["head_commit"]

    refs = (await client.get("/v1/skills/refs")).json()
    assert {b["name"]: b["commit"] for b in refs["branches"]} == {
        "main": git(upstream, "rev-parse", "main"), "dev": git(upstream, "rev-parse", "dev")}
    [tag] = refs["tags"]
    assert tag["name"] == "v1" and tag["ref"] == "refs/tags/v1"
    assert tag["commit"] == git(upstream, "rev-parse", "v1^{commit}") and tag["tag"] == git(upstream, "rev-parse", "v1")
    assert refs["head_ref"] == "refs/heads/main"


async def test_trees_list_entries_at_a_ref(client, upstream):
    await refreshed(client)
    root = (await client.get("/v1/skills/tree")).json()
    assert root["ref"] == "refs/heads/main" and root["path"] == ""
    assert root["id"] == git(upstream, "rev-parse", "main^{tree}")
    by_name = {e["name"]: e for e in root["entries"]}
    assert set(by_name) == {"README.md", "skills", "rules", "agents", "private", "team", "data", "scripts"}
    assert by_name["README.md"]["type"] == "blob" and by_name["README.md"]["size"] == len("# Skills\nsecond\n")
    assert by_name["README.md"]["id"] == git(upstream, "rev-parse", "main:README.md")
    assert by_name["skills"]["type"] == "tree" and by_name["skills"]["size"] is None

    scripts = (await client.get("/v1/skills/tree/scripts")).json()
    assert scripts["entries"] == [{"path": "scripts/run.sh", "name": "run.sh", "type": "blob", "mode": "100755",
                                   "id": git(upstream, "rev-parse", "main:scripts/run.sh"), "size": 18}]
    deep = (await client.get("/v1/skills/tree/skills", params={"recursive": "true"})).json()
    assert [e["path"] for e in deep["entries"]] == ["skills/writing", "skills/writing/SKILL.md"]
    everything = (await client.get("/v1/skills/tree", params={"recursive": "true", "ref": "dev"})).json()
    assert "dev-only.md" in {e["path"] for e in everything["entries"]}
    assert everything["commit"] == git(upstream, "rev-parse", "dev")
    by_tag = (await client.get("/v1/skills/tree/", params={"ref": "v1"})).json()
    assert by_tag["ref"] == "refs/tags/v1" and by_tag["commit"] == git(upstream, "rev-parse", "v1^{commit}")
    by_id = (await client.get("/v1/skills/tree", params={"ref": by_tag["commit"]})).json()
    assert by_id["commit"] == by_tag["commit"]

    for url, params, status in [("/v1/skills/tree/nowhere", {}, 404), ("/v1/skills/tree", {"ref": "nope"}, 404),
                                ("/v1/skills/tree", {"ref": "a..b"}, 422), ("/v1/skills/tree", {"ref": "x y"}, 422),
                                ("/v1/skills/tree/README.md", {}, 404), ("/v1/skills/tree/a/%2e%2e/b", {}, 422),
                                ("/v1/skills/tree", {"ref": "f" * 40}, 404)]:
        response = await client.get(url, params=params)
        assert response.status_code == status, (url, params, response.text)
        assert response.headers["content-type"] == "application/problem+json"


async def test_files_have_etags_and_content_types(client, upstream):
    await refreshed(client)
    response = await client.get("/v1/skills/files/README.md")
    assert response.status_code == 200 and response.content == b"# Skills\nsecond\n"
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    blob = git(upstream, "rev-parse", "main:README.md")
    assert response.headers["etag"] == f'"{blob}"' and response.headers["cache-control"] == "no-cache"
    assert response.headers["x-alai-commit"] == git(upstream, "rev-parse", "main")

    cached = await client.get("/v1/skills/files/README.md", headers={"If-None-Match": f'"{blob}"'})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == f'"{blob}"'
    listed = await client.get("/v1/skills/files/README.md", headers={"If-None-Match": f'"other", W/"{blob}"'})
    assert listed.status_code == 304
    stale = await client.get("/v1/skills/files/README.md", headers={"If-None-Match": '"0000"'})
    assert stale.status_code == 200

    old = await client.get("/v1/skills/files/README.md", params={"ref": "v1"})
    assert old.content == b"# Skills\nfirst\n" and old.headers["etag"] != f'"{blob}"'
    binary = await client.get("/v1/skills/files/data/blob.bin")
    assert binary.content == bytes(range(256)) and binary.headers["content-type"] == "application/octet-stream"
    text = await client.get("/v1/skills/files/team/notes.md")
    assert text.headers["content-type"].startswith("text/markdown")
    assert (await client.get("/v1/skills/files/skills")).status_code == 404
    assert (await client.get("/v1/skills/files/missing.md")).status_code == 404
    assert (await client.get("/v1/skills/files/README.md", params={"ref": "bad..ref"})).status_code == 422


def tar_members(data: bytes) -> dict[str, tarfile.TarInfo | bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            out[member.name] = archive.extractfile(member).read() if member.isfile() else member
            if member.isfile():
                out[member.name + ":mode"] = member.mode
    return out


async def test_archives_in_tar_gz_and_zip(client, upstream):
    await refreshed(client)
    response = await client.get("/v1/skills/archive")
    assert response.status_code == 200 and response.headers["content-type"] == "application/gzip"
    assert response.headers["x-alai-commit"] == git(upstream, "rev-parse", "main")
    assert "attachment" in response.headers["content-disposition"]
    members = tar_members(response.content)
    assert members["README.md"] == b"# Skills\nsecond\n" and members["data/blob.bin"] == bytes(range(256))
    assert members["scripts/run.sh:mode"] == 0o755 and members["rules/style.md:mode"] == 0o644
    assert members["private/keys.md"] == b"very private\n"  # admin sees private folders
    assert "dev-only.md" not in members

    etag = response.headers["etag"]
    again = await client.get("/v1/skills/archive", headers={"If-None-Match": etag})
    assert again.status_code == 304

    sub = await client.get("/v1/skills/archive/skills", params={"format": "zip", "ref": "dev"})
    assert sub.status_code == 200 and sub.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(sub.content)) as archive:
        assert archive.namelist() == ["writing/", "writing/SKILL.md"]
        assert archive.read("writing/SKILL.md") == b"---\nname: writing\n---\nWrite well.\n"
        assert archive.testzip() is None
    whole = await client.get("/v1/skills/archive", params={"format": "zip"})
    with zipfile.ZipFile(io.BytesIO(whole.content)) as archive:
        assert archive.read("README.md") == b"# Skills\nsecond\n"
        assert (archive.getinfo("scripts/run.sh").external_attr >> 16) & 0o777 == 0o755

    assert (await client.get("/v1/skills/archive/README.md")).status_code == 404
    assert (await client.get("/v1/skills/archive/nowhere")).status_code == 404
    assert (await client.get("/v1/skills/archive", params={"format": "rar"})).status_code == 422


async def test_private_folders_are_invisible_without_the_private_scope(client, anonymous_client):
    await refreshed(client)
    reader = await token_with(client, "skills:read")
    trusted = await token_with(client, "skills:read", "skills:private")

    root = (await anonymous_client.get("/v1/skills/tree", headers=reader)).json()
    names = {e["name"] for e in root["entries"]}
    assert "private" not in names and "team" in names
    team = (await anonymous_client.get("/v1/skills/tree/team", headers=reader, params={"recursive": "1"})).json()
    assert [e["path"] for e in team["entries"]] == ["team/notes.md"]
    everything = (await anonymous_client.get("/v1/skills/tree", headers=reader, params={"recursive": "1"})).json()
    assert not [e for e in everything["entries"] if e["path"].startswith("private") or "secrets" in e["path"]]
    for path in ("private/keys.md", "team/secrets/token.txt"):
        hidden = await anonymous_client.get(f"/v1/skills/files/{path}", headers=reader)
        assert hidden.status_code == 404, hidden.text
        assert "private" not in hidden.json()["detail"] or path.startswith("private")  # no hint beyond the name asked
        assert (await anonymous_client.get(f"/v1/skills/files/{path}", headers=trusted)).status_code == 200
        assert (await client.get(f"/v1/skills/files/{path}")).status_code == 200
    for path in ("/v1/skills/tree/private", "/v1/skills/tree/team/secrets", "/v1/skills/archive/private"):
        assert (await anonymous_client.get(path, headers=reader)).status_code == 404
        assert (await anonymous_client.get(path, headers=trusted)).status_code == 200

    archive = await anonymous_client.get("/v1/skills/archive", headers=reader)
    members = tar_members(archive.content)
    assert "team/notes.md" in members and "README.md" in members
    assert not [name for name in members if name.startswith("private") or "secrets" in name]
    full = await anonymous_client.get("/v1/skills/archive", headers=trusted)
    assert "private/keys.md" in tar_members(full.content)
    assert archive.headers["etag"] != full.headers["etag"]  # a cache never mixes the two

    no_scope = await token_with(client, "mc:read")
    assert (await anonymous_client.get("/v1/skills/status", headers=no_scope)).status_code == 403
    assert (await anonymous_client.get("/v1/skills/status")).status_code == 401
    assert (await anonymous_client.post("/v1/skills/refresh", headers=reader)).status_code == 403


async def test_refresh_picks_up_new_commits_and_moved_refs(client, upstream):
    first = await refreshed(client)
    write(upstream, "README.md", "# Skills\nthird\n")
    git(upstream, "commit", "-q", "-am", "third")
    git(upstream, "branch", "-D", "dev")
    git(upstream, "tag", "v2")
    status = await refreshed(client)
    assert status["head_commit"] == git(upstream, "rev-parse", "main") != first["head_commit"]
    assert (await client.get("/v1/skills/files/README.md")).content == b"# Skills\nthird\n"
    refs = (await client.get("/v1/skills/refs")).json()
    assert [b["name"] for b in refs["branches"]] == ["main"]  # pruned like fetch --prune
    assert [t["name"] for t in refs["tags"]] == ["v1", "v2"] and refs["tags"][1]["tag"] is None
    assert (await client.get("/v1/skills/tree", params={"ref": "dev"})).status_code == 404


def github_signature(body: bytes, secret: str = WEBHOOK_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_webhook_checks_the_shared_secret_then_fetches(client, anonymous_client, upstream):
    before = await refreshed(client)
    body = b'{"ref": "refs/heads/main", "after": "abc"}'
    for headers in ({}, {"X-Hub-Signature-256": github_signature(body, "wrong")}, {"X-Hub-Signature-256": "sha256="},
                    {"X-Gitlab-Token": "wrong"}, {"X-Hub-Signature-256": b"sha256=\xe9"}):
        response = await anonymous_client.post("/v1/skills/webhook", content=body, headers=headers)
        assert response.status_code == 401, (headers, response.text)
        assert response.headers["content-type"] == "application/problem+json"

    write(upstream, "rules/new.md", "New rule.\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "new rule")
    accepted = await anonymous_client.post("/v1/skills/webhook", content=body,
                                           headers={"X-Hub-Signature-256": github_signature(body),
                                                    "X-GitHub-Event": "push"})
    assert accepted.status_code == 202 and accepted.json()["accepted"] is True
    head = git(upstream, "rev-parse", "main")

    async def fetched():
        status = (await client.get("/v1/skills/status")).json()
        return status if status["head_commit"] == head else None

    status = await wait_for(fetched)
    assert status["head_commit"] != before["head_commit"]
    assert (await client.get("/v1/skills/files/rules/new.md")).content == b"New rule.\n"

    gitlab = await anonymous_client.post("/v1/skills/webhook", content=b"{}", headers={"X-Gitlab-Token": WEBHOOK_SECRET})
    assert gitlab.status_code == 202


async def test_webhook_without_a_secret_is_disabled(settings):
    async with running(settings, skills_webhook_secret=None) as http:
        response = await http.post("/v1/skills/webhook", content=b"{}", headers={"X-Gitlab-Token": "anything"})
        assert response.status_code == 404 and response.json()["type"].endswith("webhook-disabled")


async def test_upstream_removed_keeps_serving_the_last_state(client, upstream):
    good = await refreshed(client)
    shutil.rmtree(upstream)
    status = await refreshed(client)
    assert status["head_commit"] == good["head_commit"] and status["refs"] == 3
    assert status["error"] and "no git repository" in status["error"].lower()
    assert status["last_success_at"] == good["last_success_at"] and status["last_fetch_at"] > good["last_fetch_at"]
    assert status["age_seconds"] >= 0 and "\n" not in status["error"]
    assert (await client.get("/v1/skills/files/README.md")).content == b"# Skills\nsecond\n"
    assert (await client.get("/v1/skills/tree/skills")).status_code == 200
    report = (await client.get("/v1/status")).json()
    [module] = [m for m in report["modules"] if m["name"] == "skills"]
    assert module["state"] == "degraded" and "last fetch failed" in module["detail"]


async def test_restart_with_the_upstream_gone_serves_the_mirror_and_its_age(settings, upstream):
    async with running(settings) as http:
        first = await refreshed(http)
    shutil.rmtree(upstream)
    async with running(settings) as http:
        status = (await http.get("/v1/skills/status")).json()
        # (the start-up fetch of the first app may have run after its refresh)
        assert status["head_commit"] == first["head_commit"] and status["last_success_at"] >= first["last_success_at"]
        assert (await http.get("/v1/skills/files/rules/style.md")).content == b"Be brief.\n"
        status = await refreshed(http)
        assert status["error"] and status["age_seconds"] >= 0


async def test_unreachable_http_upstream_does_not_stop_the_server_and_leaks_no_credentials(settings):
    url = "http://deploy-user:pa55word-xyz@127.0.0.1:9/org/skills.git?private_token=q-secret-1"
    async with running(settings, skills_repo=url, skills_token=SecretStr("tok-secret-value")) as http:
        status = await refreshed(http)
        assert status["repo"] == "http://***@127.0.0.1:9/org/skills.git?***"
        assert status["error"] and status["head_commit"] is None and status["last_success_at"] is None
        text = str(status)
        for secret in ("deploy-user", "pa55word", "q-secret-1", "tok-secret-value"):
            assert secret not in text
        unavailable = await http.get("/v1/skills/tree")
        assert unavailable.status_code == 503 and unavailable.headers["retry-after"]


async def test_ssh_addresses_are_refused_with_what_to_use_instead(settings):
    async with running(settings, skills_repo="git@github.com:org/skills.git") as http:
        status = await refreshed(http)
        assert "ssh addresses are not supported" in status["error"] and "https" in status["error"]


async def test_not_configured(settings):
    async with running(settings, skills_repo=None) as http:
        assert (await http.get("/v1/skills/status")).json() == {
            "configured": False, "repo": None, "head_ref": None, "head_commit": None, "last_fetch_at": None,
            "last_success_at": None, "age_seconds": None, "error": None, "refs": 0, "fetching": False}
        for method, path in (("GET", "/v1/skills/tree"), ("POST", "/v1/skills/refresh"),
                             ("GET", "/v1/skills/files/README.md")):
            response = await http.request(method, path)
            assert response.status_code == 404 and response.json()["type"].endswith("skills-not-configured")


async def test_agents_in_the_repository_are_registered_with_the_runner(client, upstream):
    await refreshed(client)
    agents = {a["name"]: a for a in (await client.get("/v1/agents")).json()}
    assert agents["reviewer"]["updated_by"] == "skills" and agents["reviewer"]["model"] == "qwen2.5-coder:32b"
    assert agents["planner"]["system_prompt"] == "You plan."
    assert "broken" not in agents and "notes" not in agents
    version = agents["reviewer"]["version"]

    write(upstream, "agents/reviewer.md", REVIEWER.replace("You review code.", "You review code carefully."))
    (upstream / "agents/planner.md").unlink()
    git(upstream, "add", "-A")
    git(upstream, "commit", "-q", "-m", "agents changed")
    await refreshed(client)
    agents = {a["name"]: a for a in (await client.get("/v1/agents")).json()}
    assert agents["reviewer"]["version"] == version + 1
    assert agents["reviewer"]["system_prompt"] == "You review code carefully."
    assert "planner" not in agents  # the repository put it there and no longer has it


# -- git smart HTTP, by hand (the e2e test drives the git binary) -------------------------

def pkt(line: bytes) -> bytes:
    return f"{len(line) + 4:04x}".encode() + line


async def test_smart_http_advertises_and_sends_a_pack_for_a_gzip_request(client, upstream):
    await refreshed(client)
    advertised = await client.get("/v1/skills/git/info/refs", params={"service": "git-upload-pack"})
    assert advertised.status_code == 200
    assert advertised.headers["content-type"] == "application/x-git-upload-pack-advertisement"
    assert advertised.content.startswith(b"001e# service=git-upload-pack\n0000")
    head = git(upstream, "rev-parse", "main")
    assert f"{head} refs/heads/main".encode() in advertised.content
    assert b"symref=HEAD:refs/heads/main" in advertised.content

    request = pkt(f"want {head} side-band-64k ofs-delta thin-pack no-progress\n".encode()) + b"0000" + pkt(b"done\n")
    response = await client.post("/v1/skills/git/git-upload-pack", content=gzip.compress(request),
                                 headers={"Content-Type": "application/x-git-upload-pack-request",
                                          "Content-Encoding": "gzip"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-git-upload-pack-result"
    assert response.content.startswith(b"0008NAK\n") and b"PACK" in response.content

    bad = await client.post("/v1/skills/git/git-upload-pack", content=b"not gzip",
                            headers={"Content-Type": "application/x-git-upload-pack-request",
                                     "Content-Encoding": "gzip"})
    assert bad.status_code == 400
    wrong_type = await client.post("/v1/skills/git/git-upload-pack", content=request)
    assert wrong_type.status_code == 415
    invalid_want = pkt(b"want " + b"1" * 40 + b" side-band-64k\n") + b"0000" + pkt(b"done\n")
    refused = await client.post("/v1/skills/git/git-upload-pack", content=invalid_want,
                                headers={"Content-Type": "application/x-git-upload-pack-request"})
    assert refused.status_code == 400


async def test_smart_http_refuses_push_dumb_clients_and_clones_without_the_private_scope(client, anonymous_client):
    await refreshed(client)
    push = await client.get("/v1/skills/git/info/refs", params={"service": "git-receive-pack"})
    assert push.status_code == 403 and "read-only" in push.json()["detail"]
    assert (await client.post("/v1/skills/git/git-receive-pack", content=b"0000")).status_code == 403
    assert (await client.get("/v1/skills/git/info/refs")).status_code == 403

    reader = await token_with(client, "skills:read")
    refused = await anonymous_client.get("/v1/skills/git/info/refs", params={"service": "git-upload-pack"},
                                         headers=reader)
    assert refused.status_code == 403 and "skills:private" in refused.json()["detail"]
    assert "/v1/skills/archive" in refused.json()["detail"]
    as_git = await anonymous_client.get("/v1/skills/git/info/refs", params={"service": "git-upload-pack"},
                                        headers={**reader, "User-Agent": "git/2.45.0"})
    assert as_git.status_code == 403 and as_git.headers["content-type"].startswith("text/plain")
    assert "skills:private" in as_git.text  # git prints a text/plain body as `remote: …`
    missing = await anonymous_client.get("/v1/skills/git/info/refs", params={"service": "git-upload-pack"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")


async def test_smart_http_clone_needs_only_skills_read_without_private_globs(settings, upstream):
    async with running(settings, skills_private="") as http:
        await refreshed(http)
        created = await http.post("/v1/identity/tokens", json={"name": "cloner", "scopes": ["skills:read"]})
        reader = {"Authorization": f"Bearer {created.json()['token']}"}
        advertised = await http.get("/v1/skills/git/info/refs", params={"service": "git-upload-pack"}, headers=reader)
        assert advertised.status_code == 200


def test_private_globs():
    rules = PrivatePaths.parse("private/**, */secrets/*, **/credentials.md")
    assert rules.matches("private") and rules.matches("private/a/b.md")
    assert rules.matches("team/secrets/x") and rules.matches("team/secrets/x/y")
    assert not rules.matches("team/secrets") and not rules.matches("a/b/secrets/x")
    assert rules.matches("credentials.md") and rules.matches("a/b/credentials.md")
    assert not rules.matches("privateer.md") and not rules.matches("README.md")
    assert not PrivatePaths.parse("") and not PrivatePaths.parse(" , ").matches("anything")
    with pytest.raises(BadGlob):
        PrivatePaths.parse("[unclosed")
