"""What the fakes of command-line tools (bws, bw) share: their state in a JSON file that
tests seed and read, changed under a file lock by each run of the fake, and the small
executable that tests put on PATH in place of the real tool."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def write_state(path: Path, state: dict) -> None:
    with _locked(path):
        _save(path, state)


def read_state(path: Path) -> dict:
    with _locked(path):
        return json.loads(path.read_text(encoding="utf-8"))


def install(bin_dir: Path, state_path: Path, *, name: str, variable: str, module: str) -> Path:
    """An executable `name` that runs the fake `module` with `state_path` (it needs no inherited environment)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / name
    script.write_text(f"#!/bin/sh\n{variable}='{state_path}' PYTHONPATH='{ROOT}' "
                      f"exec '{sys.executable}' -m {module} \"$@\"\n")
    script.chmod(0o755)
    return script


@contextlib.contextmanager
def call(variable: str, argv: list[str]) -> Iterator[tuple[dict, Callable[[], None]]]:
    """One run of a fake: records `argv` in the state's `calls`, waits its `delay`, then
    yields the state as it is now (a test may have changed it meanwhile) with a `save`."""
    path = Path(os.environ[variable])
    with _locked(path):
        state = json.loads(path.read_text(encoding="utf-8"))
        state.setdefault("calls", []).append(argv)
        _save(path, state)
    time.sleep(float(state.get("delay", 0.0)))
    with _locked(path):
        state = json.loads(path.read_text(encoding="utf-8"))
        yield state, lambda: _save(path, state)


@contextlib.contextmanager
def _locked(path: Path):
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _save(path: Path, state: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, ensure_ascii=False, indent=2), encoding="utf-8")
    temporary.replace(path)
