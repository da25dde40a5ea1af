"""The user's own Bitwarden CLI (`bw`), checked at `alai login` as the plan has it:
is it installed, signed in, unlocked — and if locked, an offer to unlock it."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass

STATUS_TIMEOUT = 15.0


@dataclass(frozen=True)
class BwStatus:
    state: str  # missing | unauthenticated | locked | unlocked | error
    detail: str = ""
    user: str | None = None
    server: str | None = None


def status(binary: str = "bw") -> BwStatus:
    path = shutil.which(binary)
    if path is None:
        return BwStatus("missing", "the Bitwarden CLI (bw) is not installed")
    try:
        done = subprocess.run([path, "status"], capture_output=True, text=True, timeout=STATUS_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as error:
        return BwStatus("error", f"bw status did not answer: {type(error).__name__}")
    return parse_status(done.returncode, done.stdout, done.stderr)


def parse_status(code: int, stdout: str, stderr: str) -> BwStatus:
    """`bw status` prints one JSON object: status unauthenticated|locked|unlocked,
    userEmail, serverUrl (null for bitwarden.com)."""
    try:
        data = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else None
    except ValueError:
        data = None
    if code != 0 or not isinstance(data, dict) or data.get("status") not in ("unauthenticated", "locked", "unlocked"):
        reason = (stderr.strip() or stdout.strip() or f"exit code {code}").splitlines()[0][:200]
        return BwStatus("error", f"bw status failed: {reason}")
    return BwStatus(data["status"], user=data.get("userEmail"), server=data.get("serverUrl") or "bitwarden.com")


def unlock_interactively(binary: str = "bw") -> int:
    """Runs `bw unlock` on the user's terminal (it asks for the master password and
    prints how to export the session). Returns its exit code."""
    path = shutil.which(binary) or binary
    return subprocess.run([path, "unlock"]).returncode
