#!/usr/bin/env python3
"""HiveMind publish → delivery latency with many WebSocket subscribers.

`alai serve` (embedded PostgreSQL); N WebSocket subscribers on `bench.*` (one asyncio
process); a publisher sending single-message HTTP publishes at a target rate for a
few seconds. Latency: from just before the publish request is sent to each
subscriber's receipt (so it includes the HTTP round trip and the commit). Prints
p50/p99 over all deliveries and the rate actually achieved, last.

Not yet here (issue 5): the highest sustained durable rate, and the NATS and Redis
reference runs in the same process.

    python bench/hive_latency.py [--subscribers 100] [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import websockets
from support import running_serve

TOKEN = "bench-hive-token"


async def run(base: str, subscribers: int, rate: float, seconds: float) -> None:
    sent: dict[int, float] = {}
    latencies: list[float] = []
    url = base.replace("http://", "ws://") + "/v1/hive/stream?topic=bench.*"
    sockets = [await websockets.connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"},
                                        max_queue=None) for _ in range(subscribers)]
    done = asyncio.Event()

    async def listen(ws) -> None:
        try:
            async for raw in ws:
                now = time.perf_counter()
                message = json.loads(raw)
                marker = message.get("payload", {}).get("n") if isinstance(message.get("payload"), dict) else None
                if marker is not None and marker in sent:
                    latencies.append(now - sent[marker])
        except websockets.ConnectionClosed:
            pass

    listeners = [asyncio.create_task(listen(ws)) for ws in sockets]
    await asyncio.sleep(0.5)
    total = int(rate * seconds)
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, limits=limits,
                                 timeout=30) as http:
        started = time.perf_counter()

        async def publish(n: int) -> None:
            sent[n] = time.perf_counter()
            response = await http.post("/v1/hive/topics/bench.load/messages", json={"json": {"n": n}})
            response.raise_for_status()

        tasks = []
        for n in range(total):
            target = started + n / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(publish(n)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    deadline = time.perf_counter() + 10
    while len(latencies) < total * subscribers and time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
    done.set()
    for ws in sockets:
        await ws.close()
    for task in listeners:
        task.cancel()
    delivered = len(latencies)
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000
    print(f"published {total} in {elapsed:.2f} s ({total / elapsed:.0f} msg/s); "
          f"deliveries {delivered} of {total * subscribers}")
    print(f"hive_latency: publish → delivery p50 {p50:.1f} ms, p99 {p99:.1f} ms with {subscribers} WebSocket "
          f"subscribers at {total / elapsed:.0f} msg/s achieved (target rate {rate:g}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="alai-bench-hive-") as tmp, running_serve(Path(tmp), token=TOKEN) as base:
        asyncio.run(run(base, args.subscribers, args.rate, args.seconds))


if __name__ == "__main__":
    main()
