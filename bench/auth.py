#!/usr/bin/env python3
"""What authentication costs, and how long `alai login` takes.

1. Requests/s of a no-op route without auth vs the same route behind a bearer token:
   a built-in access token (RS256 JWT) and an API token (hash lookup, cached).
   The server is uvicorn (one process) on loopback; the load comes from `wrk`
   (Debian package) when installed, else from a Python httpx loader (slower, so the
   server is less saturated). Target: <= 10 % overhead.
2. `alai login --no-browser` against the built-in issuer, with the browser step (the
   sign-in form) excluded: CLI start to URL printed, plus pasted URL to exit.

    python bench/auth.py [--seconds 10] [--connections 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"server not ready:\n{log.read_text()}")


def wrk_rps(url: str, token: str | None, seconds: int, connections: int) -> float:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        raise SystemExit(f"{url} answered errors under load:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


async def python_rps(url: str, token: str | None, seconds: int, connections: int) -> float:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    done = 0
    deadline = time.monotonic() + seconds

    async def worker(http: httpx.AsyncClient) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            response = await http.get(url, headers=headers)
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}: {response.text}")
            done += 1

    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10) as http:
        started = time.monotonic()
        await asyncio.gather(*(worker(http) for _ in range(connections)))
        return done / (time.monotonic() - started)


def measure(url: str, token: str | None, seconds: int, connections: int) -> float:
    if shutil.which("wrk"):
        return wrk_rps(url, token, seconds, connections)
    return asyncio.run(python_rps(url, token, seconds, connections))


def login_time(server: str, env: dict[str, str]) -> float:
    from tests.support.oauth import sign_in_sync

    started = time.perf_counter()
    cli = subprocess.Popen([sys.executable, "-m", "alai", "login", "--no-browser"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = cli.stdout.readline().strip()
    before_browser = time.perf_counter() - started
    location = sign_in_sync(url, "bench", "bench-password-123")
    resumed = time.perf_counter()
    _, err = cli.communicate(location + "\n", timeout=60)
    if cli.returncode != 0:
        raise SystemExit(f"alai login failed: {err}")
    return before_browser + (time.perf_counter() - resumed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--logins", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from alai.server.db import migrations
    from alai.server.db.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="alai-bench-auth-") as tmp:
        tmp_path = Path(tmp)
        pg = EmbeddedPostgres(tmp_path / "data")
        url = pg.start()
        try:
            migrations.migrate(url)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            env = {**os.environ, "ALAI_DATABASE_URL": url, "ALAI_ADMIN_TOKEN": "bench-admin", "ALAI_PORT": str(port),
                   "ALAI_PUBLIC_URL": base, "ALAI_LOG_LEVEL": "warning", "ALAI_LOG_FORMAT": "json",
                   "ALAI_CONFIG_DIR": str(tmp_path / "config"), "ALAI_KEYRING": "off"}
            created = subprocess.run([sys.executable, "-m", "alai", "admin", "user", "create", "bench",
                                      "--password-stdin"], input="bench-password-123\n", env=env,
                                     capture_output=True, text=True)
            if created.returncode != 0:
                raise SystemExit(created.stderr)
            log = tmp_path / "server.log"
            with open(log, "wb") as out:
                server = subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "--factory", "auth_app:build", "--app-dir", str(ROOT / "bench"),
                     "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
                    env=env, stdout=out, stderr=subprocess.STDOUT)
            try:
                wait_ready(f"{base}/readyz", server, log)
                api_token = httpx.post(f"{base}/v1/identity/tokens", headers={"Authorization": "Bearer bench-admin"},
                                       json={"name": "bench", "scopes": ["profile"]}).json()["token"]
                logins = [login_time(base, {**env, "ALAI_SERVER": base}) for _ in range(args.logins)]
                from alai.client import credentials

                os.environ["ALAI_CONFIG_DIR"] = env["ALAI_CONFIG_DIR"]
                os.environ["ALAI_KEYRING"] = "off"
                jwt_token = credentials.load("default", base).access_token
                loader = "wrk" if shutil.which("wrk") else "python-httpx"
                measure(f"{base}/bench/open", None, 2, args.connections)  # warm-up
                samples: dict[str, list[float]] = {"open": [], "jwt": [], "api-token": []}
                # Interleaved rounds, medians: drift of the machine hits all three alike.
                for round_number in range(args.rounds):
                    for name, token, path in (("open", None, "/bench/open"), ("jwt", jwt_token, "/bench/auth"),
                                              ("api-token", api_token, "/bench/auth")):
                        samples[name].append(measure(f"{base}{path}", token, args.seconds, args.connections))
                        print(f"round {round_number + 1} {name:<10} {samples[name][-1]:8.0f} req/s", flush=True)
                results = {name: statistics.median(values) for name, values in samples.items()}
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(30)
        finally:
            pg.stop()
    baseline = results["open"]
    jwt_overhead = (1 - results["jwt"] / baseline) * 100
    api_overhead = (1 - results["api-token"] / baseline) * 100
    print(f"alai login (browser step excluded): median {statistics.median(logins):.2f} s over {len(logins)} logins")
    print(f"auth: no-auth {baseline:.0f} req/s; JWT {results['jwt']:.0f} req/s ({jwt_overhead:+.1f} % cost); "
          f"API token {results['api-token']:.0f} req/s ({api_overhead:+.1f} % cost); loader {loader}, "
          f"{args.connections} connections, median of {args.rounds} rounds of {args.seconds} s; login median {statistics.median(logins):.2f} s")


if __name__ == "__main__":
    main()
