"""A new machine made ready after `alai login`, one idempotent step at a time.

    1. profile   the control plane's URL saved in the profile (it may have come from ALAI_SERVER)
    2. skills    a clone of the control plane's skills in ~/.claude (skipped when it mirrors none)
    3. secrets   GET /v1/secrets/mounts: every mounted backend answers
    4. status    GET /v1/status: the control plane is ok (what `alai status` shows)

Each step is safe to run again (a saved profile stays saved, a clone already up to
date is left alone), so after a failure `alai login --resume` simply runs them all
again and the finished ones pass at once. `run` stops at the first failure.

`secrets_check` and `control_plane_check` are also checks of `alai doctor`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alai.client import http, profiles, skills_sync

State = Literal["ok", "warn", "skip", "fail"]


@dataclass
class Outcome:
    state: State
    detail: str
    fix: str | None = None  # what to do, for `fail` and `warn`

    @property
    def failed(self) -> bool:
        return self.state == "fail"


# -- the steps --------------------------------------------------------------------------------------


def save_profile(profile: profiles.Profile) -> Outcome:
    """Keep the server this login used in the profile, so the next command needs no ALAI_SERVER."""
    path = profiles.config_path()
    existed = path.exists()
    data = profiles.load()
    stored = data["profiles"].setdefault(profile.name, {})
    saved = stored.get("server")
    if saved == profile.server:
        return Outcome("ok", f"{profile.name} → {profile.server} (saved in {path})")
    if saved:
        return Outcome("warn", f"{profile.name} is saved with {saved}; this login used {profile.server} "
                               f"({profile.sources.get('server')}) and left the profile as it was",
                       fix=f"keep the new URL with `alai config set --profile {profile.name} server {profile.server}`")
    stored["server"] = profile.server
    if not existed:
        data["current"] = profile.name
    profiles.save(data)
    return Outcome("ok", f"{profile.name} → {profile.server} saved in {path}")


def sync_skills(client: http.Client, dest: Path) -> Outcome:
    """Clone or fast-forward the skills into `dest`; skipped when the control plane mirrors none."""
    try:
        status = skills_sync.mirror_status(client)
        token = client.bearer()
        result = skills_sync.sync(client.profile.server, token, dest)
    except (skills_sync.NotServed, skills_sync.NotConfigured, skills_sync.NotPermitted) as error:
        return Outcome("skip", f"{error}; nothing to sync")
    except (skills_sync.SyncError, http.ClientError) as error:
        return Outcome("fail", str(error))
    detail = skills_sync.summary(result)
    if status.get("error"):
        return Outcome("warn", f"{detail}; but the control plane's mirror is stale ({status['error']})",
                       fix="the control plane's administrator: see `alai skills status`")
    return Outcome("ok", detail)


def secrets_check(client: http.Client) -> Outcome:
    """The control plane's secrets backends answer (GET /v1/secrets/mounts)."""
    try:
        mounts = client.get_json("/v1/secrets/mounts")
    except http.ApiError as error:
        if error.status == 403:
            return Outcome("skip", "your token may not use secrets (no secrets:read scope)")
        if error.status == 404:
            return Outcome("skip", "the control plane serves no secrets")
        return Outcome("fail", f"the control plane could not list its secrets backends: {error}",
                       fix="the control plane's administrator: see its log")
    except http.ClientError as error:
        return Outcome("fail", str(error))
    if not mounts:
        return Outcome("skip", "no secrets backends are mounted")
    down = [mount for mount in mounts if mount.get("healthy") is False]
    if down:
        names = "; ".join(f"{m['kind']} at '{m.get('prefix') or '/'}': {m.get('detail') or 'no detail'}"
                          for m in down)
        return Outcome("fail", f"{len(down)} of {len(mounts)} secrets backends down ({names})",
                       fix="the control plane's administrator: check the backend and ALAI_SECRETS_CONFIG "
                           "(secrets in a healthy backend still work)")
    kinds = ", ".join(f"{m['kind']} at '{m.get('prefix') or '/'}'" for m in mounts)
    return Outcome("ok", f"{len(mounts)} {'backend answers' if len(mounts) == 1 else 'backends answer'} ({kinds})")


def control_plane_check(client: http.Client) -> Outcome:
    """What `alai status` checks: the database, migrations and modules are ok."""
    from alai.wire.ops import StatusReport

    try:
        report = StatusReport.model_validate(client.get_json("/v1/status"))
    except http.ApiError as error:
        if error.status == 403:
            return Outcome("skip", "your token may not read the status (no ops:read scope)")
        return Outcome("fail", str(error), fix="see `alai status`")
    except http.ClientError as error:
        return Outcome("fail", str(error))
    if report.state == "ok":
        running = [m.name for m in report.modules if m.state == "ok"]
        return Outcome("ok", f"alai {report.version}: the database and {len(running)} modules are ok")
    problems = [f"database {report.database.state}: {report.database.detail or ''}".rstrip(": ")] \
        if report.database.state != "ok" else []
    problems += [f"{m.name} {m.state}" + (f": {m.detail}" if m.detail else "") for m in report.modules
                 if m.state not in ("ok", "disabled")]
    return Outcome("fail", f"{report.state} ({'; '.join(problems) or 'no detail'})",
                   fix="the control plane's administrator: see `alai status`")


# -- the run ------------------------------------------------------------------------------------------

STEP_NAMES = ("profile", "skills", "secrets", "status")


def steps(profile: profiles.Profile, client: http.Client, dest: Path) -> list[tuple[str, Callable[[], Outcome]]]:
    return [
        ("profile", lambda: save_profile(profile)),
        ("skills", lambda: sync_skills(client, dest)),
        ("secrets", lambda: secrets_check(client)),
        ("status", lambda: control_plane_check(client)),
    ]


def run(profile: profiles.Profile, *, dest: Path, report: Callable[[int, int, str, Outcome], Any]) -> Outcome | None:
    """Runs the steps in order, calling `report(number, total, name, outcome)` after each;
    returns the failed step's outcome (the rest were not run), or None when all passed."""
    with http.Client(profile) as client:
        planned = steps(profile, client, dest)
        for number, (name, action) in enumerate(planned, 1):
            outcome = action()
            report(number, len(planned), name, outcome)
            if outcome.failed:
                return outcome
    return None
