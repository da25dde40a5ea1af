"""`alai skills sync`'s engine: a git clone of the control plane's skills, kept by fast-forwards.

It drives the `git` binary against `{server}/v1/skills/git` (read-only smart HTTP).
The contract:

- The bearer token is never written to argv or `.git/config`: git gets it from its
  environment config (`GIT_CONFIG_COUNT`/`GIT_CONFIG_KEY_n`/`GIT_CONFIG_VALUE_n`),
  which lives only as long as the one git process; prompts are off.
- Nothing local is ever overwritten: uncommitted changes to tracked files, local
  commits that are not on the server, and untracked files where the update would put
  a file all stop the sync before anything changes, with what to do (`SyncError`).
- A destination that is not a clone of this server's skills is refused.

Every failure is a `SyncError` whose str() is one line for people, fix included.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

GIT_PATH = "/v1/skills/git"
GIT_TIMEOUT = 600.0


class SyncError(Exception):
    """The sync stopped (before changing anything); str() says why and what to do.

    After a dry run that got as far as the comparison, `result` is what the sync
    would have done had nothing stood in the way."""

    def __init__(self, message: str, result: SyncResult | None = None) -> None:
        super().__init__(message)
        self.result = result


DestKind = Literal["missing", "empty", "clone", "other-clone", "not-a-clone"]


@dataclass
class Destination:
    path: Path
    kind: DestKind
    remote: str | None = None  # origin's URL for a git work tree


@dataclass
class SyncResult:
    # cloned | fast-forwarded | switched | up-to-date | would-clone | would-fast-forward | would-switch
    action: str
    dest: str
    ref: str
    before: str | None  # the commit checked out before (None: nothing was)
    after: str  # the commit checked out after (or that would be)
    files: int = 0  # cloned: files in the tree; otherwise files changed
    insertions: int = 0
    deletions: int = 0
    commits: list[str] = field(default_factory=list)  # "abc1234 subject", newest first (20 at most)
    commit_count: int = 0  # all the commits the update brings
    diffstat: str = ""
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- pure helpers ---------------------------------------------------------------------------------


def remote_url(server: str) -> str:
    return server.rstrip("/") + GIT_PATH


def same_remote(actual: str | None, expected: str) -> bool:
    """Whether origin's URL names `expected` (trailing `/` or `.git` aside)."""
    if not actual:
        return False

    def norm(url: str) -> str:
        url = url.strip().rstrip("/")
        return url[:-4] if url.endswith(".git") else url

    return norm(actual) == norm(expected)


def git_environment(token: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for one git process: the bearer token as an extra HTTP header in
    git's environment config (never argv, never .git/config), no prompts, English messages."""
    env = dict(os.environ if base is None else base)
    try:
        count = int(env.get("GIT_CONFIG_COUNT", "0"))
    except ValueError:
        count = 0
    extra = [("credential.helper", "")]  # an empty value clears helpers: nothing asks or stores
    if token:
        extra.insert(0, ("http.extraHeader", f"Authorization: Bearer {token}"))
    for offset, (key, value) in enumerate(extra):
        env[f"GIT_CONFIG_KEY_{count + offset}"] = key
        env[f"GIT_CONFIG_VALUE_{count + offset}"] = value
    env["GIT_CONFIG_COUNT"] = str(count + len(extra))
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GCM_INTERACTIVE"] = "never"
    env["GIT_ASKPASS"] = env["SSH_ASKPASS"] = "true"  # answers every question with nothing
    env["LC_ALL"] = "C"
    return env


_SHORTSTAT = re.compile(r"(\d+) files? changed(?:, (\d+) insertions?\(\+\))?(?:, (\d+) deletions?\(-\))?")


def parse_shortstat(text: str) -> tuple[int, int, int]:
    """`git diff --shortstat` → (files, insertions, deletions)."""
    found = _SHORTSTAT.search(text)
    if not found:
        return 0, 0, 0
    return tuple(int(group or 0) for group in found.groups())  # type: ignore[return-value]


def parse_porcelain(output: str) -> list[str]:
    """`git status --porcelain=v1 -z` → the paths it names (a rename's new path)."""
    paths: list[str] = []
    entries = output.split("\0")
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        status, path = entry[:2], entry[3:]
        paths.append(path)
        if "R" in status or "C" in status:
            index += 1  # the original path follows as its own entry
    return paths


def shown(paths: list[str], limit: int = 3) -> str:
    """`a, b, c and 4 more`."""
    head = ", ".join(paths[:limit])
    return head + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def home_relative(path: Path) -> str:
    """`~/.claude` rather than `/home/me/.claude`, for messages."""
    try:
        return "~/" + str(path.relative_to(Path.home())) if path != Path.home() else "~"
    except ValueError:
        return str(path)


def git_failure(stderr: str, server: str, *, what: str) -> str:
    """A failed git command's stderr → one line that says what to do."""
    text = stderr.strip()
    lowered = text.lower()
    if ("authentication failed" in lowered or "could not read username" in lowered
            or "returned error: 401" in lowered):
        return f"{what}: the control plane refused your token: run `alai login`"
    if "returned error: 403" in lowered:
        return (f"{what}: your token may not clone the skills (that needs the skills:read scope, and "
                "skills:private when the repository has private folders); ask an administrator")
    if "returned error: 404" in lowered:
        return (f"{what}: the control plane serves no skills repository at {remote_url(server)} "
                "(is ALAI_SKILLS_REPO set on the server? see `alai skills status`)")
    if "returned error: 503" in lowered:
        return f"{what}: the control plane has mirrored nothing yet (see `alai skills status` for why)"
    if "failed to connect" in lowered or "could not resolve host" in lowered or "couldn't connect" in lowered:
        return f"{what}: cannot reach {server}: check the URL with `alai config show`, or is `alai serve` running?"
    if "remote branch" in lowered and "not found" in lowered or "couldn't find remote ref" in lowered:
        return f"{what}: the skills repository has no such branch (see `alai skills status` for its branches)"
    lines = [line.removeprefix("fatal: ").removeprefix("error: ") for line in text.splitlines() if line.strip()]
    return f"{what}: git: {lines[-1] if lines else 'failed'}"


# -- git ------------------------------------------------------------------------------------------


class Git:
    """Runs git in one directory with one environment; failures become SyncError."""

    def __init__(self, cwd: Path | None, env: dict[str, str], server: str) -> None:
        self.cwd = cwd
        self.env = env
        self.server = server
        self.binary = shutil.which("git")
        if self.binary is None:
            raise SyncError("git is not installed: install it (https://git-scm.com/downloads), then run this again")

    def run(self, *args: str, what: str = "git", check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [self.binary or "git", *args]
        if self.cwd is not None:
            command[1:1] = ["-C", str(self.cwd)]
        try:
            done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=GIT_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise SyncError(f"{what}: git did not finish within {GIT_TIMEOUT:.0f} s") from None
        if check and done.returncode != 0:
            raise SyncError(git_failure(done.stderr, self.server, what=what))
        return done

    def out(self, *args: str, what: str = "git") -> str:
        return self.run(*args, what=what).stdout.strip()

    def commit_of(self, ref: str) -> str | None:
        done = self.run("rev-parse", "--verify", "--quiet", ref + "^{commit}", check=False)
        return done.stdout.strip() if done.returncode == 0 else None

    def is_ancestor(self, older: str, newer: str) -> bool:
        return self.run("merge-base", "--is-ancestor", older, newer, check=False).returncode == 0


def local_git(dest: Path) -> Git:
    """Git in `dest` for local questions only (no token)."""
    return Git(dest, git_environment(None), server="")


def inspect(dest: Path, expected_remote: str) -> Destination:
    """What `dest` is: missing, empty, a clone of `expected_remote`, another clone, or other files."""
    if not dest.exists():
        return Destination(dest, "missing")
    if not dest.is_dir():
        return Destination(dest, "not-a-clone")
    if not any(dest.iterdir()):
        return Destination(dest, "empty")
    # .git in dest itself: a dest inside some other repository (a dotfiles home) is not a clone.
    if not (dest / ".git").exists():
        return Destination(dest, "not-a-clone")
    # The URL as configured: `remote get-url` would apply the user's insteadOf rewrites.
    done = local_git(dest).run("config", "--get", "remote.origin.url", check=False)
    remote = done.stdout.strip() if done.returncode == 0 else None
    return Destination(dest, "clone" if same_remote(remote, expected_remote) else "other-clone", remote)


def refuse_foreign(found: Destination, expected_remote: str) -> SyncError:
    where = home_relative(found.path)
    if found.kind == "other-clone":
        origin = f"a git clone of {found.remote}" if found.remote else "a git repository without an origin"
        return SyncError(f"{where} is {origin}, not a clone of this control plane's skills "
                         f"({expected_remote}): sync elsewhere with --dest, or, if it is the same repository "
                         f"under another address, `git -C {where} remote set-url origin {expected_remote}`")
    if found.path.exists() and not found.path.is_dir():
        return SyncError(f"{where} is a file, not a directory: move it aside or sync elsewhere with --dest")
    return SyncError(f"{where} already holds files and is not a clone of the skills: move it aside "
                     f"(`mv {where} {where}.before-alai`) and run this again, or sync elsewhere with --dest")


def count_files(git: Git, commit: str) -> int:
    listing = git.out("ls-tree", "-r", "-z", "--name-only", commit)
    return len([name for name in listing.split("\0") if name])


def commits_between(git: Git, older: str | None, newer: str, limit: int = 20) -> list[str]:
    span = f"{older}..{newer}" if older else newer
    text = git.out("log", "--no-decorate", "--format=%h %s", f"--max-count={limit}", span)
    return [line for line in text.splitlines() if line]


def tracked_changes(git: Git) -> list[str]:
    return parse_porcelain(git.run("status", "--porcelain=v1", "-z", "--untracked-files=no").stdout)


def untracked_in_the_way(git: Git, dest: Path, head: str, target: str) -> list[str]:
    """Files the update would add where an untracked file (or a file for a folder) already is."""
    added = [p for p in git.out("diff", "--name-only", "-z", "--no-renames", "--diff-filter=A", head,
                                target).split("\0") if p]
    blocked = []
    for path in added:
        parts = Path(path).parts
        parents = [dest.joinpath(*parts[:n]) for n in range(1, len(parts))]
        if os.path.lexists(dest / path) or any(p.exists() and not p.is_dir() for p in parents):
            blocked.append(path)
    return blocked


# -- sync ------------------------------------------------------------------------------------------

Step = Callable[[str], None]


def sync(server: str, token: str | None, dest: Path, *, ref: str | None = None, dry_run: bool = False,
         step: Step = lambda line: None) -> SyncResult:
    """Clone into `dest` (missing or empty), else fetch and fast-forward; see the module docstring."""
    url = remote_url(server)
    env = git_environment(token)
    found = inspect(dest, url)
    if found.kind in ("other-clone", "not-a-clone"):
        raise refuse_foreign(found, url)
    if found.kind in ("missing", "empty"):
        return _clone(server, url, env, dest, ref, dry_run, step)
    return _update(server, env, dest, ref, dry_run, step)


def _clone(server: str, url: str, env: dict[str, str], dest: Path, ref: str | None, dry_run: bool,
           step: Step) -> SyncResult:
    where = home_relative(dest)
    branch = ["--branch", ref] if ref else []
    if dry_run:
        step(f"dry run: fetching {url}{' (' + ref + ')' if ref else ''} to see what a clone would bring")
        with tempfile.TemporaryDirectory(prefix="alai-skills-") as scratch:
            git = Git(None, env, server)
            git.run("clone", "--quiet", "--bare", *branch, "--", url, scratch, what="fetching the skills")
            bare = Git(Path(scratch), env, server)
            head = bare.out("rev-parse", "HEAD")
            name = ref or bare.out("symbolic-ref", "--short", "HEAD")
            files = count_files(bare, head)
            commits = commits_between(bare, None, head, limit=5)
        return SyncResult("would-clone", str(dest), name, None, head, files=files, commits=commits)
    step(f"cloning {url}{' (' + ref + ')' if ref else ''} into {where}")
    created = not dest.exists()
    try:
        Git(None, env, server).run("clone", "--quiet", *branch, "--", url, str(dest), what="cloning the skills")
    except SyncError:
        # git cleans up a folder it created; an empty folder we were given stays as it was.
        if created and dest.exists() and not any(dest.iterdir()):
            dest.rmdir()
        raise
    git = local_git(dest)
    head = git.out("rev-parse", "HEAD")
    name = git.out("symbolic-ref", "--short", "HEAD")
    return SyncResult("cloned", str(dest), name, None, head, files=count_files(git, head))


def _update(server: str, env: dict[str, str], dest: Path, ref: str | None, dry_run: bool,
            step: Step) -> SyncResult:
    where = home_relative(dest)
    local = local_git(dest)
    current = local.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip() or None
    if current is None and ref is None:
        raise SyncError(f"{where} is not on a branch (detached HEAD): `git -C {where} switch main` (or the branch "
                        "you want), or name one with --ref")
    branch = ref or current
    assert branch is not None
    remote_ref = f"refs/remotes/origin/{branch}"
    seen_before = local.commit_of(remote_ref)
    step(f"fetching {branch} from {remote_url(server)}")
    Git(dest, env, server).run("fetch", "--quiet", "--no-tags", "origin", f"+refs/heads/{branch}:{remote_ref}",
                               what="fetching the skills")
    target = local.out("rev-parse", remote_ref)
    head = local.out("rev-parse", "HEAD")
    switching = branch != current
    base = local.commit_of(f"refs/heads/{branch}") if switching else head
    if base is not None and base != target and not local.is_ancestor(base, target):
        raise _not_a_fast_forward(local, where, branch, base, target, seen_before)
    result = SyncResult("up-to-date", str(dest), branch, head, target)
    if head == target and not switching:
        changed = tracked_changes(local)
        if changed:
            result.notes.append(f"{plural(len(changed), 'file')} with local changes, not touched: {shown(changed)}")
        return result
    stat = local.out("diff", "--shortstat", head, target)
    result.files, result.insertions, result.deletions = parse_shortstat(stat)
    result.diffstat = local.run("diff", "--stat=100", head, target).stdout.rstrip()
    result.commits = commits_between(local, base or head, target)
    result.commit_count = int(local.out("rev-list", "--count", f"{base or head}..{target}"))
    if dry_run:
        result.action = "would-switch" if switching else "would-fast-forward"
    changed = tracked_changes(local)
    if changed:
        raise SyncError(f"{where} has uncommitted changes to {plural(len(changed), 'file')} ({shown(changed)}); "
                        f"nothing was changed. Set them aside with `git -C {where} stash`, run `alai skills sync`, "
                        f"then `git -C {where} stash pop`; or discard them with `git -C {where} checkout -- .`",
                        result if dry_run else None)
    in_the_way = untracked_in_the_way(local, dest, head, target)
    if in_the_way:
        raise SyncError(f"{where} has untracked files where the update brings files ({shown(in_the_way)}); nothing "
                        "was changed. Move them aside, then run `alai skills sync` again", result if dry_run else None)
    if dry_run:
        return result
    if switching:
        step(f"switching {where} from {current or 'a detached HEAD'} to {branch}")
        if base is None:
            local.run("switch", "--quiet", "--track", "-c", branch, remote_ref, what="switching branch")
        else:
            local.run("switch", "--quiet", branch, what="switching branch")
    if base is not None and base != target:
        step(f"fast-forwarding {branch}: {base[:7]}..{target[:7]} ({plural(result.commit_count, 'commit')})")
        local.run("merge", "--ff-only", "--quiet", remote_ref, what="fast-forwarding")
    result.action = "switched" if switching else "fast-forwarded"
    result.after = local.out("rev-parse", "HEAD")
    return result


def _not_a_fast_forward(local: Git, where: str, branch: str, base: str, target: str,
                        seen_before: str | None) -> SyncError:
    ahead = int(local.out("rev-list", "--count", f"{target}..{base}"))
    behind = int(local.out("rev-list", "--count", f"{base}..{target}"))
    if seen_before is not None and local.is_ancestor(base, seen_before):
        # Every commit here came from the server before: upstream rewrote its history.
        return SyncError(f"the skills' {branch} was rewritten upstream (a force-push), so {where} cannot be "
                         f"fast-forwarded; it has no commits of its own: `git -C {where} reset --keep "
                         f"origin/{branch}` brings it in line (uncommitted changes are kept or refused, never lost)")
    state = (f"has {plural(ahead, 'local commit')} that the control plane's skills do not"
             + (f", and is {plural(behind, 'commit')} behind" if behind else ""))
    return SyncError(f"{where} ({branch}) {state}; the sync only fast-forwards, so nothing was changed. Skills are "
                     "read-only through alai: put the commits into the skills repository upstream, then drop them "
                     f"here with `git -C {where} reset --keep origin/{branch}` (keep a copy first with "
                     f"`git -C {where} branch my-changes`), and run `alai skills sync` again")


def summary(result: SyncResult) -> str:
    """The final line for people."""
    where = home_relative(Path(result.dest))
    at = f"{result.ref} @ {result.after[:7]}"
    if result.action == "cloned":
        return f"cloned {plural(result.files, 'file')} into {where} ({at})"
    if result.action == "would-clone":
        return f"would clone {plural(result.files, 'file')} into {where} ({at}); nothing changed (dry run)"
    if result.action == "up-to-date":
        return f"up to date: {where} ({at})"
    changes = (f"{plural(result.files, 'file')} changed (+{result.insertions} -{result.deletions}), "
               f"{plural(result.commit_count, 'commit')}")
    if result.action.startswith("would-"):
        verb = "would switch to" if result.action == "would-switch" else "would fast-forward to"
        return f"{changes}: {verb} {at}; nothing changed (dry run)"
    return f"{changes}: {where} is at {at}"


def head_state(dest: Path) -> tuple[str | None, str | None]:
    """(branch, HEAD commit) of a clone, without touching the network."""
    git = local_git(dest)
    branch = git.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False).stdout.strip() or None
    return branch, git.commit_of("HEAD")


# -- the control plane's side ---------------------------------------------------------------------

STATUS_PATH = "/v1/skills/status"


class NotServed(SyncError):
    """The control plane does not serve skills at all (an older one, or the module is off)."""


class NotConfigured(SyncError):
    """The control plane serves skills, but mirrors no repository."""


class NotPermitted(SyncError):
    """The credential in use may not read the skills (no skills:read scope)."""


def mirror_status(client: Any) -> dict[str, Any]:
    """GET /v1/skills/status through an `alai.client.http.Client`; NotServed or NotConfigured
    when there are no skills to sync, NotPermitted without skills:read. Other client errors pass through."""
    from alai.client import http

    try:
        status = client.get_json(STATUS_PATH)
    except http.ApiError as error:
        if error.status == 404 and (error.problem.type or "").endswith("skills-not-configured"):
            raise NotConfigured(f"{client.profile.server} mirrors no skills repository (ALAI_SKILLS_REPO is not "
                                "set on the server)") from None
        if error.status == 404:
            raise NotServed(f"{client.profile.server} does not serve skills (an older control plane, or the "
                            "skills module is not among its ALAI_MODULES)") from None
        if error.status == 403:
            raise NotPermitted("your token may not read the skills (it needs the skills:read scope); ask an "
                            "administrator") from None
        raise
    if not status.get("configured", True):
        raise NotConfigured(f"{client.profile.server} mirrors no skills repository (ALAI_SKILLS_REPO is not set "
                            "on the server)")
    return status
