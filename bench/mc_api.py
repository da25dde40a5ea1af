#!/usr/bin/env python3
"""Mission Control API throughput and latency: GET one task, list 50 with a filter,
create, PATCH — `wrk` (Debian package) in a second process against `alai serve`
(one process, embedded PostgreSQL with default durability) holding 10,000 tasks.
Targets (issue 4): >= 2,000 GET/s and >= 1,000 creates/s on 2 cores.

    python bench/mc_api.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
from support import running_serve

TOKEN = "bench-mc-token"
SEED_TASKS = 10_000

PATCH_LUA = """
math.randomseed(os.time())
request = function()
  local id = math.random(1, %d)
  wrk.method = "PATCH"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"priority": ' .. math.random(0, 4) .. ', "assignee": "agent-' .. math.random(1, 9) .. '"}'
  return wrk.format(nil, "/v1/mc/tasks/MC-" .. id)
end
"""
GET_LUA = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/mc/tasks/MC-" .. math.random(1, %d))
end
"""
CREATE_LUA = """
counter = 0
request = function()
  counter = counter + 1
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"title": "bench task ' .. counter .. '", "project": "bench", "labels": ["load"]}'
  return wrk.format(nil, "/v1/mc/tasks")
end
"""



def run_wrk(url: str, script: str, seconds: int, connections: int, tmp: Path) -> tuple[float, float, float]:
    lua = tmp / f"s{abs(hash(script))}.lua"
    lua.write_text(script)
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua),
         "-H", f"Authorization: Bearer {TOKEN}", url],
        capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise SystemExit(f"errors under load:\n{output}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def percentile(name: str) -> float:
        match = re.search(rf"\s{name}%\s+([\d.]+)(us|ms|s)", output)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return rps, percentile("50"), percentile("99")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="alai-bench-mc-") as tmp_name:
        tmp = Path(tmp_name)
        with running_serve(tmp, token=TOKEN, extra_env={"ALAI_DB_POOL_MAX": "20"}) as base:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
            from alai.server.db.embedded import EmbeddedPostgres

            url = EmbeddedPostgres.url_of_running(tmp / "data")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    """
                    INSERT INTO mc_tasks (id, title, description, status, priority, assignee, project, labels, created_by)
                    SELECT 'MC-' || nextval('mc_task_number'), 'seeded task ' || n, repeat('words ', 40),
                           (ARRAY['todo','in_progress','blocked','review','done'])[1 + n %% 5], n %% 5,
                           'agent-' || (n %% 9), (ARRAY['alai-core','tenders','inbox','infra'])[1 + n %% 4],
                           ARRAY['seed'], 'bench'
                    FROM generate_series(1, %s) AS n
                    """, (SEED_TASKS,))
                conn.execute("ANALYZE mc_tasks")
            results = {}
            for name, path, script in (
                ("get", "/", GET_LUA % SEED_TASKS),
                ("list50", "/v1/mc/tasks?status=in_progress&limit=50", ""),
                ("create", "/", CREATE_LUA),
                ("patch", "/", PATCH_LUA % SEED_TASKS),
            ):
                target = base + path
                results[name] = run_wrk(target, script or "-- plain GET\n", args.seconds, args.connections, tmp)
                rps, p50, p99 = results[name]
                print(f"{name:<7} {rps:8.0f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms", flush=True)
    summary = ", ".join(f"{name} {rps:.0f}/s (p50 {p50:.1f} ms, p99 {p99:.1f} ms)"
                        for name, (rps, p50, p99) in results.items())
    print(f"mc_api: {summary}; wrk -t2 -c{args.connections}, {args.seconds} s each, one alai serve process")


if __name__ == "__main__":
    main()
