"""`alai skills` and `alai doctor`: the pure helpers, and the sync engine against a local
git repository that stands in for the control plane's git endpoint (git's `insteadOf`
sends `http://alai.test/v1/skills/git` to a folder, so no server is needed)."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import click
import pytest

from alai.cli import doctor, skills
from alai.client import skills_sync

SERVER = "http://alai.test"
URL = SERVER + "/v1/skills/git"
TOKEN = "tok-secret-value-123"

# -- pure helpers ------------------------------------------------------------------------------------


def test_the_token_goes_to_git_through_its_environment_only():
    env = skills_sync.git_environment(TOKEN, {"PATH": "/bin"})
    assert env["GIT_CONFIG_COUNT"] == "2"
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert env["GIT_CONFIG_VALUE_0"] == f"Authorization: Bearer {TOKEN}"
    assert env["GIT_CONFIG_KEY_1"] == "credential.helper" and env["GIT_CONFIG_VALUE_1"] == ""
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["LC_ALL"] == "C"


def test_git_environment_keeps_the_callers_own_environment_config():
    env = skills_sync.git_environment(TOKEN, {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.x",
                                              "GIT_CONFIG_VALUE_0": "y"})
    assert env["GIT_CONFIG_KEY_0"] == "core.x" and env["GIT_CONFIG_KEY_1"] == "http.extraHeader"
    assert env["GIT_CONFIG_COUNT"] == "3"
    assert "http.extraHeader" not in skills_sync.git_environment(None, {}).values()


@pytest.mark.parametrize(("actual", "same"), [
    (URL, True), (URL + "/", True), (URL + ".git", True), ("http://other/v1/skills/git", False), (None, False),
])
def test_same_remote(actual, same):
    assert skills_sync.same_remote(actual, URL) is same


def test_parse_shortstat_and_porcelain():
    assert skills_sync.parse_shortstat(" 3 files changed, 10 insertions(+), 2 deletions(-)") == (3, 10, 2)
    assert skills_sync.parse_shortstat(" 1 file changed, 1 deletion(-)") == (1, 0, 1)
    assert skills_sync.parse_shortstat("") == (0, 0, 0)
    assert skills_sync.parse_porcelain(" M a.md\0R  new.md\0old.md\0A  b c.md\0") == ["a.md", "new.md", "b c.md"]


def test_shown_plural_and_home_relative(tmp_path, monkeypatch):
    assert skills_sync.shown(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"
    assert skills_sync.plural(1, "file") == "1 file" and skills_sync.plural(2, "file") == "2 files"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert skills_sync.home_relative(tmp_path / ".claude") == "~/.claude"
    assert skills_sync.home_relative(Path("/elsewhere/x")) == "/elsewhere/x"


@pytest.mark.parametrize(("stderr", "expected"), [
    ("fatal: Authentication failed for 'http://x/'", "run `alai login`"),
    ("fatal: could not read Username for 'http://x': terminal prompts disabled", "run `alai login`"),
    ("fatal: unable to access 'http://x/': The requested URL returned error: 403", "skills:read"),
    ("fatal: unable to access 'http://x/': Failed to connect to 127.0.0.1 port 9", "cannot reach"),
    ("warning: Could not find remote branch nope to clone.\nfatal: Remote branch nope not found in upstream origin",
     "no such branch"),
    ("fatal: something else entirely", "git: something else entirely"),
])
def test_git_failures_become_one_line_with_the_fix(stderr, expected):
    message = skills_sync.git_failure(stderr, SERVER, what="cloning")
    assert expected in message and "\n" not in message and message.startswith("cloning: ")


def test_skills_paths_are_checked():
    assert skills.skills_path("/agents/x.md/") == "agents/x.md"
    assert skills.skills_path(None) == ""
    for bad in ("../etc/passwd", "a/./b", "a\\b"):
        with pytest.raises(click.ClickException):
            skills.skills_path(bad)
    assert skills.api_url(skills.TREE, "") == "/v1/skills/tree"
    assert skills.api_url(skills.FILES, "a b/c#d.md") == "/v1/skills/files/a%20b/c%23d.md"


def test_age_size_and_labels():
    assert [skills.age_text(s) for s in (None, 5, 600, 7200, 200000)] == ["-", "5 s", "10 min", "2 h", "2 d"]
    assert [skills.size_text(s) for s in (None, 10, 2048, 3 * 1024 * 1024)] == ["-", "10 B", "2.0 KiB", "3.0 MiB"]
    assert skills.entry_label({"path": "agents", "type": "tree"}) == "agents/"
    assert skills.entry_label({"path": "vendor/x", "type": "commit"}) == "vendor/x (submodule)"


def test_clock_skew_from_the_date_header():
    now = 1_800_000_000.0
    header = format_datetime(datetime.fromtimestamp(now + 120, UTC), usegmt=True)
    skew = doctor.clock_skew(header, now - 0.1, now + 0.1)
    assert 119 < skew < 121
    assert doctor.clock_skew(None, now, now) is None and doctor.clock_skew("not a date", now, now) is None
    behind = doctor.skew_outcome(skew)
    assert behind.state == "fail" and "behind the server's" in behind.detail and "timedatectl" in behind.fix
    assert doctor.skew_outcome(-90).detail.startswith("this machine's clock is 90 s ahead of")
    assert doctor.skew_outcome(3).state == "ok" and doctor.skew_outcome(None).state == "skip"


def test_doctor_lines_plain_and_marked():
    assert doctor.render_line("server", "ok", "answers", plain=True) == "ok   server        answers"
    assert doctor.render_line("token", "fail", "refused", plain=True).startswith("FAIL token")
    assert doctor.render_line("proxy", "warn", "not running", plain=False).startswith("! proxy")
    assert doctor.render_line("clock", "ok", "fine", plain=False).startswith("✓ clock")


def test_summaries():
    result = skills_sync.SyncResult("cloned", "/x/.claude", "main", None, "a" * 40, files=2000)
    assert skills_sync.summary(result) == "cloned 2000 files into /x/.claude (main @ aaaaaaa)"
    result = skills_sync.SyncResult("fast-forwarded", "/x", "main", "b" * 40, "c" * 40, files=3, insertions=10,
                                    deletions=2, commits=["ccccccc two", "ddddddd one"], commit_count=2)
    assert skills_sync.summary(result) == "3 files changed (+10 -2), 2 commits: /x is at main @ ccccccc"
    result.action = "would-fast-forward"
    assert skills_sync.summary(result).endswith("would fast-forward to main @ ccccccc; nothing changed (dry run)")
    result.action = "up-to-date"
    assert skills_sync.summary(result) == "up to date: /x (main @ ccccccc)"


# -- the engine, against a local repository -----------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def upstream(tmp_path, monkeypatch) -> Path:
    """A repository served at URL, as far as git in this test is concerned."""
    config = tmp_path / "gitconfig"
    repo = tmp_path / "upstream"
    config.write_text(f'[url "{repo}"]\n\tinsteadOf = {URL}\n[init]\n\tdefaultBranch = main\n')
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key, value in {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "T",
                       "GIT_COMMITTER_EMAIL": "t@example.com"}.items():
        monkeypatch.setenv(key, value)
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, {"CLAUDE.md": "rules\n", "agents/writer.md": "---\nname: writer\n---\n"}, "first")
    return repo


def test_clone_then_up_to_date_then_fast_forward(upstream, tmp_path):
    dest = tmp_path / "home" / ".claude"
    steps: list[str] = []
    cloned = skills_sync.sync(SERVER, TOKEN, dest, step=steps.append)
    assert cloned.action == "cloned" and cloned.files == 2 and cloned.ref == "main"
    assert (dest / "agents" / "writer.md").exists() and steps == [f"cloning {URL} into ~/.claude"]
    # The token is nowhere in the clone's configuration.
    assert TOKEN not in (dest / ".git" / "config").read_text()
    assert git(dest, "config", "--get", "remote.origin.url") == URL

    assert skills_sync.sync(SERVER, TOKEN, dest).action == "up-to-date"

    new = commit(upstream, {"skills/a.md": "A\n", "CLAUDE.md": "rules v2\n"}, "second")
    dry = skills_sync.sync(SERVER, TOKEN, dest, dry_run=True)
    assert dry.action == "would-fast-forward" and dry.files == 2 and dry.commits[0].endswith(" second")
    assert not (dest / "skills").exists() and skills_sync.head_state(dest)[1] == cloned.after

    done = skills_sync.sync(SERVER, TOKEN, dest)
    assert done.action == "fast-forwarded" and done.after == new and (dest / "skills" / "a.md").exists()
    assert done.files == 2 and done.insertions == 2 and done.deletions == 1


def test_local_changes_and_local_commits_stop_the_sync_and_change_nothing(upstream, tmp_path):
    dest = tmp_path / ".claude"
    skills_sync.sync(SERVER, TOKEN, dest)
    commit(upstream, {"CLAUDE.md": "rules v2\n"}, "second")
    (dest / "CLAUDE.md").write_text("my own rules\n")
    with pytest.raises(skills_sync.SyncError) as refused:
        skills_sync.sync(SERVER, TOKEN, dest)
    message = str(refused.value)
    assert "uncommitted changes to 1 file (CLAUDE.md)" in message and "stash" in message and "\n" not in message
    assert (dest / "CLAUDE.md").read_text() == "my own rules\n"

    # A dry run shows what would come, and why the sync would stop.
    with pytest.raises(skills_sync.SyncError) as dry:
        skills_sync.sync(SERVER, TOKEN, dest, dry_run=True)
    assert dry.value.result is not None and dry.value.result.commits[0].endswith(" second")

    git(dest, "commit", "-q", "-am", "mine")
    mine = skills_sync.head_state(dest)[1]
    with pytest.raises(skills_sync.SyncError) as diverged:
        skills_sync.sync(SERVER, TOKEN, dest)
    assert "has 1 local commit that the control plane's skills do not, and is 1 commit behind" in str(diverged.value)
    assert "reset --keep origin/main" in str(diverged.value)
    assert skills_sync.head_state(dest)[1] == mine


def test_untracked_files_are_fine_unless_the_update_would_overwrite_them(upstream, tmp_path):
    dest = tmp_path / ".claude"
    skills_sync.sync(SERVER, TOKEN, dest)
    (dest / "settings.local.json").write_text("{}")  # what Claude Code writes beside the skills
    commit(upstream, {"skills/new.md": "upstream\n"}, "second")
    (dest / "skills").mkdir()
    (dest / "skills" / "new.md").write_text("mine\n")
    with pytest.raises(skills_sync.SyncError) as refused:
        skills_sync.sync(SERVER, TOKEN, dest)
    assert "untracked files where the update brings files (skills/new.md)" in str(refused.value)
    (dest / "skills" / "new.md").unlink()
    assert skills_sync.sync(SERVER, TOKEN, dest).action == "fast-forwarded"
    assert (dest / "settings.local.json").exists()


def test_foreign_destinations_are_refused(upstream, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(skills_sync.SyncError) as refused:
        skills_sync.sync(SERVER, TOKEN, other)
    assert "already holds files and is not a clone" in str(refused.value) and "--dest" in str(refused.value)

    elsewhere = tmp_path / "elsewhere"
    subprocess.run(["git", "clone", "-q", str(upstream), str(elsewhere)], check=True)
    with pytest.raises(skills_sync.SyncError) as foreign:
        skills_sync.sync(SERVER, TOKEN, elsewhere)
    assert f"is a git clone of {upstream}" in str(foreign.value) and "remote set-url origin" in str(foreign.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert skills_sync.inspect(empty, URL).kind == "empty"
    assert skills_sync.sync(SERVER, TOKEN, empty).action == "cloned"


def test_a_rewritten_upstream_is_told_apart_from_local_commits(upstream, tmp_path):
    dest = tmp_path / ".claude"
    commit(upstream, {"b.md": "b\n"}, "second")
    skills_sync.sync(SERVER, TOKEN, dest)
    git(upstream, "reset", "-q", "--hard", "HEAD~1")
    commit(upstream, {"c.md": "c\n"}, "rewritten")
    with pytest.raises(skills_sync.SyncError) as rewritten:
        skills_sync.sync(SERVER, TOKEN, dest)
    assert "rewritten upstream" in str(rewritten.value) and "no commits of its own" in str(rewritten.value)


def test_switching_branch_with_ref(upstream, tmp_path):
    dest = tmp_path / ".claude"
    skills_sync.sync(SERVER, TOKEN, dest)
    git(upstream, "switch", "-q", "-c", "team")
    team = commit(upstream, {"team.md": "t\n"}, "team rules")
    dry = skills_sync.sync(SERVER, TOKEN, dest, ref="team", dry_run=True)
    assert dry.action == "would-switch" and skills_sync.head_state(dest)[0] == "main"
    assert dry.commit_count == 1 and dry.commits[0].endswith(" team rules")
    switched = skills_sync.sync(SERVER, TOKEN, dest, ref="team")
    assert switched.action == "switched" and skills_sync.head_state(dest) == ("team", team)
    git(upstream, "branch", "-q", "same", "main")  # a branch at the commit the clone is on: still switched to
    assert skills_sync.sync(SERVER, TOKEN, dest, ref="main").action == "switched"
    assert skills_sync.sync(SERVER, TOKEN, dest, ref="same").action == "switched"
    assert skills_sync.head_state(dest)[0] == "same"
    with pytest.raises(skills_sync.SyncError) as missing:
        skills_sync.sync(SERVER, TOKEN, dest, ref="nope")
    assert "no such branch" in str(missing.value)


def test_the_dry_run_of_a_first_clone_changes_nothing(upstream, tmp_path):
    dest = tmp_path / ".claude"
    would = skills_sync.sync(SERVER, TOKEN, dest, dry_run=True)
    assert would.action == "would-clone" and would.files == 2 and not dest.exists()


# -- the set-up after `alai login`, against fakes of the control plane -------------------------------


def profile_for(server: str = SERVER):
    from alai.client import profiles

    return profiles.Profile(name="default", server=server, token="t", timeout=5.0,
                            sources={"server": "env ALAI_SERVER", "token": "login"})


def client_answering(routes: dict[str, tuple[int, object]]):
    import httpx

    from alai.client import http

    def answer(request: httpx.Request) -> httpx.Response:
        status, body = routes.get(request.url.path, (404, {"title": "Not Found", "status": 404}))
        return httpx.Response(status, json=body)

    return http.Client(profile_for(), transport=httpx.MockTransport(answer))


def test_the_profile_step_saves_once_and_never_overwrites_another_server():
    from alai.client import bootstrap, profiles

    first = bootstrap.save_profile(profile_for())
    assert first.state == "ok" and "saved in" in first.detail
    assert profiles.load()["profiles"]["default"]["server"] == SERVER and profiles.load()["current"] == "default"
    assert bootstrap.save_profile(profile_for()).state == "ok"
    other = bootstrap.save_profile(profile_for("http://elsewhere.test"))
    assert other.state == "warn" and "alai config set --profile default server http://elsewhere.test" in other.fix
    assert profiles.load()["profiles"]["default"]["server"] == SERVER


def test_the_secrets_step():
    from alai.client import bootstrap

    healthy = [{"prefix": "", "kind": "local", "healthy": True}]
    assert bootstrap.secrets_check(client_answering({"/v1/secrets/mounts": (200, healthy)})).detail == \
        "1 backend answers (local at '/')"
    down = healthy + [{"prefix": "team", "kind": "bws", "healthy": False, "detail": "bws: 401"}]
    outcome = bootstrap.secrets_check(client_answering({"/v1/secrets/mounts": (200, down)}))
    assert outcome.state == "fail" and "bws at 'team': bws: 401" in outcome.detail and outcome.fix
    forbidden = {"/v1/secrets/mounts": (403, {"title": "Forbidden", "status": 403})}
    assert bootstrap.secrets_check(client_answering(forbidden)).state == "skip"


def test_the_status_step_names_what_is_not_ok():
    from alai.client import bootstrap

    report = {"state": "degraded", "version": "0.1.0", "instance_id": "i", "generated_at": "2026-01-01T00:00:00Z",
              "database": {"state": "ok"},
              "modules": [{"name": "mc", "state": "ok"}, {"name": "gateway", "state": "down", "detail": "no backend"},
                          {"name": "hive", "state": "disabled"}]}
    outcome = bootstrap.control_plane_check(client_answering({"/v1/status": (200, report)}))
    assert outcome.state == "fail" and outcome.detail == "degraded (gateway down: no backend)"


def test_the_skills_step_is_skipped_without_a_repository_or_the_scope(tmp_path):
    from alai.client import bootstrap

    unconfigured = {"/v1/skills/status": (200, {"configured": False})}
    outcome = bootstrap.sync_skills(client_answering(unconfigured), tmp_path / ".claude")
    assert outcome.state == "skip" and "ALAI_SKILLS_REPO" in outcome.detail
    forbidden = {"/v1/skills/status": (403, {"title": "Forbidden", "status": 403})}
    assert bootstrap.sync_skills(client_answering(forbidden), tmp_path / ".claude").state == "skip"
    assert not (tmp_path / ".claude").exists()
