"""What the benches share: a free port, and `alai serve` running on an embedded database."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_serve(folder: Path, *, token: str, extra_env: dict[str, str] | None = None,
                  database_url: str | None = None) -> Iterator[str]:
    """`alai serve` (embedded PostgreSQL in `folder/data`, or `database_url`: another
    replica's) until the block ends; yields its base URL."""
    port = free_port()
    env = {**os.environ, "ALAI_DATA_DIR": str(folder / "data"), "ALAI_ADMIN_TOKEN": token,
           "ALAI_LOG_LEVEL": "warning", "ALAI_LOG_FORMAT": "json", **(extra_env or {})}
    env.pop("ALAI_DATABASE_URL", None)
    if database_url:
        env["ALAI_DATABASE_URL"] = database_url
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / f"serve-{port}.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "alai", "serve", "--port", str(port)], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"alai serve did not become ready:\n{log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
