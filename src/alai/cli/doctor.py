"""`alai doctor`: each part of this machine's set-up, checked, with the fix for each failure.

The checks, in order (a check that needs an earlier one to pass is skipped when it failed):

    profile        a saved profile (or ALAI_SERVER) names the control plane
    server         GET /healthz answers
    token          GET /v1/identity/me accepts the credential in use
    clock          the server's Date header is within 60 s of this machine's clock
    skills         DEST is a clone whose HEAD is the server's commit for its branch
    proxy          the local :11434 proxy runs (a warning unless --require-proxy)
    secrets        GET /v1/secrets/mounts: every backend answers
    control plane  GET /v1/status is ok

Exit 0 when no check failed (warnings and skipped checks do not count), else 1.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import click

from alai.cli.output import print_json
from alai.cli.skills import DEFAULT_DEST, age_text, dest_path

CLOCK_SKEW_LIMIT = 60.0
MARKS = {"ok": ("✓", "green"), "fail": ("✗", "red"), "warn": ("!", "yellow"), "skip": ("-", "dim")}
WORDS = {"ok": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}

# -- pure helpers -------------------------------------------------------------------------------


def clock_skew(date_header: str | None, sent_at: float, received_at: float) -> float | None:
    """Seconds the server's clock is ahead of ours (negative: behind), from its Date header,
    against the middle of the request; None without a usable header. The header has
    whole seconds, so up to ±1 s is noise."""
    if not date_header:
        return None
    try:
        server_time = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return None
    local = (sent_at + received_at) / 2
    # The header is truncated to the second: its true value is up to 1 s later.
    return server_time + 0.5 - local


def skew_outcome(skew: float | None, limit: float = CLOCK_SKEW_LIMIT) -> Any:
    from alai.client.bootstrap import Outcome

    if skew is None:
        return Outcome("skip", "the server sent no Date header")
    way = "behind" if skew > 0 else "ahead of"
    if abs(skew) <= limit:
        return Outcome("ok", f"within {max(1, round(abs(skew)))} s of the server's")
    return Outcome("fail", f"this machine's clock is {abs(skew):.0f} s {way} the server's (tokens are refused "
                           f"or expire early past {limit:.0f} s)",
                   fix="turn on network time: `sudo timedatectl set-ntp true` (Linux), System Settings → Date & "
                       "Time → set automatically (macOS), or `w32tm /resync` (Windows)")


def render_line(name: str, state: str, detail: str, *, plain: bool, width: int = 14) -> str:
    """One check as a line: `✓ server        answers …` (or `ok   server …` when plain)."""
    if plain:
        return f"{WORDS[state]:<5}{name:<{width}}{detail}"
    mark, _ = MARKS[state]
    return f"{mark} {name:<{width}}{detail}"


@dataclass
class Check:
    name: str
    state: str
    detail: str
    fix: str | None = None
    required: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "detail": self.detail, "fix": self.fix,
                "required": self.required}


# -- the checks ---------------------------------------------------------------------------------------


class Doctor:
    """Runs the checks in order, keeping what later checks need (the client, scopes)."""

    def __init__(self, profile_name: str | None, dest: Path, require_proxy: bool) -> None:
        self.profile_name = profile_name
        self.dest = dest
        self.require_proxy = require_proxy
        self.checks: list[Check] = []
        self.profile: Any = None
        self.client: Any = None
        self.server_up = False
        self.token_ok = False
        self.scopes: set[str] = set()

    def add(self, name: str, outcome: Any, *, required: bool = True) -> None:
        state = outcome.state
        if state == "fail" and not required:
            state = "warn"
        self.checks.append(Check(name, state, outcome.detail, outcome.fix, required))

    def run(self) -> list[Check]:
        from alai.client import bootstrap, http

        self.add("profile", self.profile_check())
        if self.profile is None:
            return self.checks
        self.client = http.Client(self.profile)
        try:
            skew = self.server_check()
            self.add("token", self.token_check() if self.server_up else _skipped("the server"))
            self.add("clock", skew_outcome(skew) if self.server_up else _skipped("the server"))
            ready = self.server_up and self.token_ok
            self.add("skills", self.skills_check() if ready else _skipped("the token" if self.server_up else
                                                                           "the server"))
            self.add("proxy", self.proxy_check(), required=self.require_proxy)
            self.add("secrets", bootstrap.secrets_check(self.client) if ready else _skipped("the token"))
            self.add("control plane", bootstrap.control_plane_check(self.client) if ready
                     else _skipped("the token"))
        finally:
            self.client.close()
        return self.checks

    def profile_check(self) -> Any:
        from alai.client import profiles
        from alai.client.bootstrap import Outcome

        try:
            self.profile = profiles.resolve(self.profile_name)
        except profiles.ProfileError as error:
            return Outcome("fail", str(error), fix="see `alai config show`")
        source = self.profile.sources.get("server", "default")
        where = f"{self.profile.name} → {self.profile.server}"
        if source == "default":
            return Outcome("warn", f"{where}: no profile is saved, so the default URL is used",
                           fix="`alai config set server https://your-control-plane`, then `alai login`")
        origin = f"saved in {profiles.config_path()}" if source.startswith("profile") else f"from {source}"
        return Outcome("ok", f"{where} ({origin})")

    def server_check(self) -> float | None:
        import httpx

        from alai.client import profiles
        from alai.client.bootstrap import Outcome

        server = self.profile.server
        sent = time.time()
        try:
            response = httpx.get(f"{server}/healthz", timeout=self.profile.timeout)
        except httpx.TransportError as error:
            hint = ("is `alai serve` running?" if profiles.is_loopback(server)
                    else "check the URL (`alai config show`) and your network")
            reason = "connection refused" if isinstance(error, httpx.ConnectError) else type(error).__name__
            self.add("server", Outcome("fail", f"cannot reach {server} ({reason})", fix=hint))
            return None
        received = time.time()
        if response.status_code != 200:
            self.add("server", Outcome("fail", f"{server}/healthz answered HTTP {response.status_code}",
                                       fix="is this URL an alai control plane? (`alai config show`)"))
            return None
        self.server_up = True
        self.add("server", Outcome("ok", f"{server} answers ({(received - sent) * 1000:.0f} ms)"))
        return clock_skew(response.headers.get("date"), sent, received)

    def token_check(self) -> Any:
        from alai.client import http
        from alai.client.bootstrap import Outcome

        source = self.profile.sources.get("token", "none")
        if not self.profile.token:
            return Outcome("fail", f"no credentials for {self.profile.server}", fix="run `alai login`")
        try:
            me = self.client.get_json("/v1/identity/me")
        except http.ApiError as error:
            if error.status == 401:
                fixes = {"env ALAI_TOKEN": "ALAI_TOKEN is refused: replace it or unset it",
                         "local admin token": "the local admin token is refused: is this `alai serve`'s data dir?"}
                return Outcome("fail", f"the control plane refused the token ({source}): {error}",
                               fix=fixes.get(source, "run `alai login`"))
            return Outcome("fail", str(error), fix="see `alai whoami`")
        except http.ClientError as error:
            return Outcome("fail", str(error), fix="run `alai login`")
        self.token_ok = True
        self.scopes = set(me.get("scopes", []))
        who = me.get("email") or me.get("name") or me.get("subject")
        return Outcome("ok", f"{who} ({source})")

    def skills_check(self) -> Any:
        from alai.client import http, skills_sync
        from alai.client.bootstrap import Outcome

        try:
            status = skills_sync.mirror_status(self.client)
        except (skills_sync.NotServed, skills_sync.NotConfigured, skills_sync.NotPermitted) as error:
            return Outcome("skip", str(error))
        except (skills_sync.SyncError, http.ClientError) as error:
            return Outcome("fail", str(error))
        url = skills_sync.remote_url(self.profile.server)
        where = skills_sync.home_relative(self.dest)
        found = skills_sync.inspect(self.dest, url)
        if found.kind in ("missing", "empty"):
            return Outcome("fail", f"{where} has no skills yet", fix="run `alai skills sync`")
        if found.kind != "clone":
            return Outcome("fail", str(skills_sync.refuse_foreign(found, url)),
                           fix="sync elsewhere with `alai skills sync --dest DIR` (and `alai doctor --dest DIR`)")
        branch, head = skills_sync.head_state(self.dest)
        if branch is None or head is None:
            return Outcome("fail", f"{where} is not on a branch (detached HEAD)",
                           fix=f"`git -C {where} switch {default_branch(status)}`, then `alai skills sync`")
        expected = server_commit(self.client, status, branch)
        if expected is None:
            return Outcome("fail", f"{where} is on {branch}, which the control plane's skills do not have",
                           fix=f"`git -C {where} switch {default_branch(status)}`, then `alai skills sync`")
        mirrored = f"mirrored {age_text(status.get('age_seconds'))} ago"
        if status.get("error"):
            mirrored += f"; the mirror cannot fetch: {status['error']}"
        if head == expected:
            changed = skills_sync.tracked_changes(skills_sync.local_git(self.dest))
            note = f"; {len(changed)} files with local changes" if changed else ""
            return Outcome("ok", f"{where} at {branch} @ {head[:7]}, as on the server ({mirrored}){note}")
        state = divergence(self.dest, head, expected, branch)
        if state == "behind":
            return Outcome("fail", f"{where} is behind the server ({branch} @ {head[:7]}, the server has "
                                   f"{expected[:7]})", fix="run `alai skills sync`")
        return Outcome("fail", f"{where} ({branch} @ {head[:7]}) has local commits that the server's skills "
                               f"({expected[:7]}) do not", fix=f"put them upstream, then `git -C {where} reset "
                                                              f"--keep origin/{branch}` and `alai skills sync`")

    def proxy_check(self) -> Any:
        from alai.cli import start
        from alai.client.bootstrap import Outcome

        port = int(os.environ.get("ALAI_PROXY_PORT") or start.DEFAULT_PORT)
        state = start._read_state()
        if state and start._alive(state["pid"]):
            host, port = state["host"], state["port"]
            found = start._probe(host, port) or {}
            if "alai" not in found:
                return Outcome("fail", f"pid {state['pid']} holds the proxy's place but http://{host}:{port} "
                                       "does not answer", fix="`alai start --stop`, then `alai start`")
            if state.get("server") != self.profile.server:
                return Outcome("fail", f"running on http://{host}:{port}, but to {state.get('server')}",
                               fix="`alai start --stop`, then `alai start`")
            return Outcome("ok", f"running on http://{host}:{port} → {state['server']} (pid {state['pid']})")
        found = start._probe("127.0.0.1", port)
        if found is None:
            return Outcome("fail", "not running: alai start", fix="`alai start` (scripts for Ollama then reach the "
                                                                  "gateway on :11434)")
        if "alai" in found:
            return Outcome("ok", f"running on http://127.0.0.1:{port}")
        return Outcome("fail", f"not running, and port {port} is taken",
                       fix=start._port_taken_message("127.0.0.1", port))


def _skipped(what: str) -> Any:
    from alai.client.bootstrap import Outcome

    return Outcome("skip", f"not checked: {what} check failed")


def server_commit(client: Any, status: dict[str, Any], branch: str) -> str | None:
    """The server's commit for `branch`: from the status for its head branch, else /v1/skills/refs."""
    if status.get("head_ref") in (branch, f"refs/heads/{branch}") and status.get("head_commit"):
        return status["head_commit"]
    from alai.wire.skills import SkillRefs

    refs = SkillRefs.model_validate(client.get_json("/v1/skills/refs"))
    return next((ref.commit for ref in refs.branches if branch in (ref.name, ref.ref)), None)


def default_branch(status: dict[str, Any]) -> str:
    return (status.get("head_ref") or "main").removeprefix("refs/heads/")


def divergence(dest: Path, head: str, expected: str, branch: str) -> str:
    """'behind' when HEAD is an ancestor of the server's commit (as far as this clone knows:
    an unknown commit counts as newer if HEAD is in origin's last fetched history), else 'local'."""
    from alai.client import skills_sync

    git = skills_sync.local_git(dest)
    if git.commit_of(expected) is not None:
        return "behind" if git.is_ancestor(head, expected) else "local"
    fetched = git.commit_of(f"refs/remotes/origin/{branch}")
    return "behind" if fetched is not None and git.is_ancestor(head, fetched) else "local"


# -- the command -------------------------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
@click.option("--dest", default=DEFAULT_DEST, show_default=True, envvar="ALAI_SKILLS_DEST",
              help="The local clone of the skills (env ALAI_SKILLS_DEST).")
@click.option("--require-proxy", is_flag=True, help="Count a stopped :11434 proxy as a failure, not a warning.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, dest: str, require_proxy: bool) -> None:
    """Check this machine's set-up, one line per check, with the fix for each failure.

    Profile, server reachable, token valid, clock skew, skills in sync with the
    server, the local :11434 proxy, secrets backends, the control plane's status.
    Exits 1 when a required check fails.
    """
    checks = Doctor((ctx.find_root().obj or {}).get("profile"), dest_path(dest), require_proxy).run()
    failed = [check for check in checks if check.state == "fail"]
    if as_json:
        print_json({"ok": not failed, "checks": [check.as_dict() for check in checks]})
    else:
        _render(checks, failed)
    if failed:
        ctx.exit(1)


def _render(checks: list[Check], failed: list[Check]) -> None:
    plain = bool(os.environ.get("NO_COLOR")) or not sys.stdout.isatty()
    for check in checks:
        line = render_line(check.name, check.state, check.detail, plain=plain)
        if plain:
            click.echo(line)
        else:
            click.echo(click.style(line[:1], fg=None if check.state == "skip" else MARKS[check.state][1],
                                   dim=check.state == "skip") + line[1:])
        if check.fix and check.state in ("fail", "warn"):
            click.echo(f"{'':<5}{'':<14}fix: {check.fix}" if plain else f"  {'':<14}fix: {check.fix}")
    if failed:
        click.echo(f"{len(failed)} of {len(checks)} checks failed: " + ", ".join(c.name for c in failed))
    else:
        click.echo("all checks passed")
