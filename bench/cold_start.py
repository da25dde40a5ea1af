#!/usr/bin/env python3
"""Wall time from launching `alai serve` to /readyz = 200.

For each run: a new empty data directory (first start: initdb, migrations), then a
restart on the same directory (warm start). Each start is stopped with SIGTERM and
must exit 0 with its PostgreSQL gone, so this doubles as CI's embedded smoke test.
Targets (issue 2): first <= 6 s, warm <= 2 s. Prints the figure last.

    python bench/cold_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_and_time(data_dir: Path, log: Path) -> float:
    port = free_port()
    env = {**os.environ, "ALAI_DATA_DIR": str(data_dir), "ALAI_LOG_FORMAT": "json"}
    env.pop("ALAI_DATABASE_URL", None)
    with open(log, "ab") as out:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "alai", "serve", "--port", str(port)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = started + 60
        while not ready(f"http://127.0.0.1:{port}/readyz"):
            if process.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"alai serve did not become ready; log:\n{log.read_text()}")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    if code != 0:
        raise SystemExit(f"alai serve exited {code} after SIGTERM; log:\n{log.read_text()}")
    if (data_dir / "postgres" / "postmaster.pid").exists():
        raise SystemExit("the embedded PostgreSQL is still running after alai serve stopped")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    firsts, warms = [], []
    with tempfile.TemporaryDirectory(prefix="alai-bench-") as tmp:
        for run in range(args.runs):
            data_dir = Path(tmp) / f"data-{run}"
            log = Path(tmp) / f"serve-{run}.log"
            firsts.append(start_and_time(data_dir, log))
            warms.append(start_and_time(data_dir, log))
            print(f"run {run + 1}: first {firsts[-1]:.2f} s, warm {warms[-1]:.2f} s", flush=True)
    print(f"cold_start: first start median {statistics.median(firsts):.2f} s (max {max(firsts):.2f}), "
          f"warm restart median {statistics.median(warms):.2f} s (max {max(warms):.2f}) over {args.runs} runs")


if __name__ == "__main__":
    main()
