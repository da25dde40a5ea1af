#!/usr/bin/env python3
"""Mission Control stream latency: change committed → WebSocket client receives it.

`alai serve` (embedded PostgreSQL); a WebSocket subscriber on /v1/mc/stream; a writer
creating tasks at a steady rate. For each task: time from the moment its POST returned
(the transaction has committed by then) to the moment the subscriber got the event
(clipped at 0 when the event beat the HTTP response). p50/p99 printed last.

    python bench/mc_stream_latency.py [--events 500] [--rate 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from support import running_serve
from websockets.sync.client import connect

TOKEN = "bench-stream-token"



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="tasks created per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alai-bench-stream-") as tmp_name:
        tmp = Path(tmp_name)
        with running_serve(tmp, token=TOKEN) as base:
            received: dict[str, float] = {}
            ready = threading.Event()

            def subscribe() -> None:
                url = base.replace("http://", "ws://") + "/v1/mc/stream"
                with connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
                    ready.set()
                    while len(received) < args.events:
                        message = json.loads(ws.recv(timeout=30))
                        received[message["task_id"]] = time.perf_counter()

            reader = threading.Thread(target=subscribe, daemon=True)
            reader.start()
            ready.wait(10)
            time.sleep(0.5)
            returned: dict[str, float] = {}
            sent: dict[str, float] = {}
            interval = 1.0 / args.rate
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                next_at = time.perf_counter()
                for n in range(args.events):
                    start = time.perf_counter()
                    response = http.post("/v1/mc/tasks", json={"title": f"latency {n}"})
                    task_id = response.json()["id"]
                    sent[task_id], returned[task_id] = start, time.perf_counter()
                    next_at += interval
                    time.sleep(max(0.0, next_at - time.perf_counter()))
            reader.join(30)
    missing = [task for task in returned if task not in received]
    if missing:
        raise SystemExit(f"{len(missing)} events never arrived")
    after_commit = sorted(max(0.0, received[t] - returned[t]) * 1000 for t in returned)
    after_send = sorted((received[t] - sent[t]) * 1000 for t in returned)

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, int(p * len(values)))]

    print(f"from POST sent: p50 {statistics.median(after_send):.1f} ms, p99 {pct(after_send, 0.99):.1f} ms")
    print(f"mc_stream_latency: commit → WebSocket p50 {statistics.median(after_commit):.1f} ms, "
          f"p99 {pct(after_commit, 0.99):.1f} ms over {len(after_commit)} events at {args.rate:g}/s")


if __name__ == "__main__":
    main()
