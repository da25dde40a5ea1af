"""What the CLI's end-to-end tests share: a control plane for a test module, and the
checks every command's output must pass (piped: no colour, no traceback; errors on one line)."""

from __future__ import annotations

import contextlib
import os
import pty
import re
import subprocess
from collections.abc import Iterator

from tests.support.processes import ALAI, ServeProcess, start_serve

ANSI = re.compile(r"\x1b\[")


@contextlib.contextmanager
def cli_server(tmp_path_factory, name: str, *, database_url: str, token: str,
               env: dict[str, str] | None = None) -> Iterator[ServeProcess]:
    """`alai serve` on `database_url` with an admin token, its own data, config and HOME."""
    base = tmp_path_factory.mktemp(name)
    process = start_serve(env={"ALAI_DATABASE_URL": database_url, "ALAI_ADMIN_TOKEN": token,
                               "ALAI_DATA_DIR": str(base / "data"), "ALAI_CONFIG_DIR": str(base / "config"),
                               "HOME": str(base), **(env or {})}, log_path=base / "serve.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert not ANSI.search(result.stdout + result.stderr)  # piped: never a colour code
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess, code: int = 1) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def on_a_terminal(env: dict[str, str], *args: str) -> str:
    """The CLI's output when stdout is a terminal (a pseudo-terminal here)."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen([*ALAI, *args], env={**os.environ, **env}, stdout=follower,
                                   stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.communicate(timeout=30)
        assert process.returncode == 0
        return b"".join(chunks).decode()
    finally:
        os.close(leader)
