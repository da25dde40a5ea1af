#!/usr/bin/env python3
"""Secrets: reads/s of a cached secret through the API (`wrk`, 2 threads, against one
`alai serve` on its embedded PostgreSQL; every read is decided by the policies and
audited), and the latency `alai run -- true` adds to `true` (resolving one secret://
reference and masking the output), median of N runs each.

    python bench/secrets_proxy.py [--seconds 10] [--connections 32] [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from support import running_serve

TOKEN = "bench-secrets-token"


def wrk(url: str, token: str, seconds: int, connections: int) -> tuple[float, float, float]:
    output = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency",
                             "-H", f"Authorization: Bearer {token}", url],
                            capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise SystemExit(f"errors under load:\n{output}")

    def percentile(name: str) -> float:
        match = re.search(rf"\s{name}%\s+([\d.]+)(us|ms|s)", output)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), percentile("50"), percentile("99")


def timed(command: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time in ms of `runs` runs (after one warm-up)."""
    samples = []
    for index in range(runs + 1):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        if index:
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="alai-bench-secrets-") as folder:
        tmp = Path(folder)
        with running_serve(tmp, token=TOKEN) as base:
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                http.put("/v1/secrets/values/bench/api-key", json={"value": "bench-value-0123456789"}
                         ).raise_for_status()
                reader = http.post("/v1/identity/tokens", json={"name": "bench-reader", "scopes": ["secrets:read"]}
                                   ).json()["token"]
                http.put("/v1/secrets/policies/bench", json={"principals": ["token:bench-reader"],
                                                             "actions": ["read"], "paths": ["bench/*"]}
                         ).raise_for_status()
            url = f"{base}/v1/secrets/values/bench/api-key"
            admin_rps, admin_p50, admin_p99 = wrk(url, TOKEN, args.seconds, args.connections)
            policy_rps, policy_p50, policy_p99 = wrk(url, reader, args.seconds, args.connections)

            env_file = tmp / "bench.env"
            env_file.write_text("API_KEY=secret://bench/api-key\n")
            env = {**os.environ, "ALAI_SERVER": base, "ALAI_TOKEN": TOKEN}
            true = shutil.which("true") or "/bin/true"
            bare = timed([true], env, args.runs)
            alai = [sys.executable, "-m", "alai"]
            version = timed([*alai, "--version"], env, args.runs)
            wrapped = timed([*alai, "run", "--env-file", str(env_file), "--", true], env, args.runs)
            unmasked = timed([*alai, "run", "--no-masking", "--env-file", str(env_file), "--", true], env, args.runs)
    print(f"cached read, admin token (no policy lookup): {admin_rps:,.0f} reads/s, p50 {admin_p50:.1f} ms, "
          f"p99 {admin_p99:.1f} ms")
    print(f"cached read, API token through a policy:     {policy_rps:,.0f} reads/s, p50 {policy_p50:.1f} ms, "
          f"p99 {policy_p99:.1f} ms")
    print(f"`true` {bare:.1f} ms; `alai --version` {version:.1f} ms; `alai run -- true` (1 reference, masked) "
          f"{wrapped:.1f} ms; unmasked {unmasked:.1f} ms (median of {args.runs})")
    print(f"secrets: {policy_rps:,.0f} cached reads/s through the API (wrk -t2 -c{args.connections}, audited); "
          f"alai run -- true adds {wrapped - bare:.0f} ms")


if __name__ == "__main__":
    main()
