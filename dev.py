#!/usr/bin/env python3
"""The two commands of the README, for a fresh machine with only Python 3.11+.

    python3 dev.py serve [ARGS...]   run the control plane (embedded PostgreSQL)
    python3 dev.py test  [ARGS...]   run the whole test suite

Both create `.venv` beside this file on first use and install the project into it
(again whenever pyproject.toml changes), then hand over to the tool inside it.
Nothing here is needed once the package is installed: `alai serve` and `pytest`
do the same work.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("ALAI_DEV_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".alai-installed"


def _say(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def _project_fingerprint() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_environment() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit("dev.py: alai needs Python 3.11 or newer; run it with python3.11 (or newer)")
    fingerprint = _project_fingerprint()
    if STAMP.exists() and STAMP.read_text().strip() == fingerprint and PYTHON.exists():
        return
    if not PYTHON.exists():
        _say(f"creating a virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    _say("installing alai with the server and dev extras (first run takes a minute)")
    # Editable, so the checkout's code is what runs and what the tests import.
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-e", f"{ROOT}[dev]"],
        check=True,
    )
    STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"serve", "test", "alai"}:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    ensure_environment()
    if command == "serve":
        args = [str(BIN / "alai"), "serve", *rest]
    elif command == "alai":
        args = [str(BIN / "alai"), *rest]
    else:
        args = [str(PYTHON), "-m", "pytest", *rest]
    os.chdir(ROOT)
    if os.name == "nt":
        return subprocess.call(args)
    os.execv(args[0], args)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
