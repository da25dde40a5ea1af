#!/usr/bin/env python3
"""Failover under steady load: ANVIL's fake Ollama is killed while requests for a model
with a fallback (FORGE) keep coming, then started again.

`alai serve` (embedded PostgreSQL) with the gateway's default health settings; 4
workers in threads send non-streaming `/api/chat` requests back to back for
`qwen3.5:27b` (routes: anvil, then forge). Figures (issue 6 targets in brackets):
failed requests (0), time from the kill to the first answer by the fallback (≤ 1 s),
time from ANVIL answering again to traffic returning to it (≤ 10 s).

    python bench/failover.py [--workers 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from support import running_serve

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKEN = "bench-failover-token"
MODEL = "qwen3.5:27b"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    from tests.fakes.ollama import FakeOllamaProcess

    anvil, forge = FakeOllamaProcess("anvil", [MODEL]), FakeOllamaProcess("forge", ["qwen2.5-coder:32b"])
    anvil.start()
    forge.start()
    results: list[tuple[float, int, str]] = []  # (monotonic time, status, who answered)
    stop = threading.Event()
    try:
        with tempfile.TemporaryDirectory(prefix="alai-bench-failover-") as tmp:
            config = Path(tmp) / "gateway.yaml"
            config.write_text(f"""
backends:
  - {{name: anvil, kind: ollama, url: "{anvil.url}"}}
  - {{name: forge, kind: ollama, url: "{forge.url}"}}
models:
  "{MODEL}": {{routes: [{{backend: anvil}}, {{backend: forge, model: "qwen2.5-coder:32b"}}]}}
""")
            with running_serve(Path(tmp), token=TOKEN, extra_env={"ALAI_GATEWAY_CONFIG": str(config)}) as base:
                def work() -> None:
                    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"},
                                      timeout=30) as client:
                        while not stop.is_set():
                            try:
                                response = client.post("/api/chat", json={
                                    "model": MODEL, "stream": False,
                                    "messages": [{"role": "user", "content": "steady"}]})
                                who = response.json().get("message", {}).get("content", "")[:7] \
                                    if response.status_code == 200 else response.text[:80]
                                results.append((time.monotonic(), response.status_code, who))
                            except httpx.HTTPError as error:
                                results.append((time.monotonic(), 0, type(error).__name__))

                workers = [threading.Thread(target=work) for _ in range(args.workers)]
                for worker in workers:
                    worker.start()
                time.sleep(3)
                killed_at = time.monotonic()
                anvil.kill()
                time.sleep(5)
                anvil.start()
                back_at = time.monotonic()  # anvil answers its own health endpoint again from here
                deadline = back_at + 20
                while time.monotonic() < deadline:
                    if any(t > back_at and who == "[anvil]" for t, _, who in results[-50:]):
                        break
                    time.sleep(0.1)
                time.sleep(1)
                stop.set()
                for worker in workers:
                    worker.join(30)
    finally:
        stop.set()
        for fake in (anvil, forge):
            if fake.process and fake.process.poll() is None:
                fake.kill()

    failed = [(t, status, who) for t, status, who in results if status != 200]
    first_fallback = next((t for t, status, who in results if t > killed_at and who == "[forge]"), None)
    returned = next((t for t, status, who in results if t > back_at and who == "[anvil]"), None)
    print(f"{len(results):,} requests from {args.workers} workers; {len(failed)} failed"
          + (f" (first: {failed[0][1]} {failed[0][2]})" if failed else ""))
    fallback_s = (first_fallback - killed_at) if first_fallback else float("nan")
    return_s = (returned - back_at) if returned else float("nan")
    print(f"failover: {len(failed)} failed requests; first fallback answer {fallback_s * 1000:.0f} ms after the "
          f"kill; traffic back on ANVIL {return_s:.2f} s after it answered again")


if __name__ == "__main__":
    main()
