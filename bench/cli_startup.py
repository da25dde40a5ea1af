#!/usr/bin/env python3
"""Wall time of `alai --version` and `alai --help` (target <= 120 ms each).

Runs the installed console script as a user would, several times after one warm-up,
and prints the medians last.

    python bench/cli_startup.py [--runs 20]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def timed(argv: list[str], runs: int) -> list[float]:
    subprocess.run(argv, capture_output=True, check=True)  # warm the OS file cache
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    alai = shutil.which("alai", path=str(Path(sys.executable).parent)) or shutil.which("alai")
    if alai is None:
        raise SystemExit("the alai console script is not installed in this environment")
    version = timed([alai, "--version"], args.runs)
    helptext = timed([alai, "--help"], args.runs)
    for name, samples in (("--version", version), ("--help", helptext)):
        print(f"alai {name}: median {statistics.median(samples):.0f} ms, "
              f"p90 {sorted(samples)[int(0.9 * len(samples)) - 1]:.0f} ms, min {min(samples):.0f} ms")
    print(f"cli_startup: alai --version median {statistics.median(version):.0f} ms, "
          f"alai --help median {statistics.median(helptext):.0f} ms over {args.runs} runs")


if __name__ == "__main__":
    main()
