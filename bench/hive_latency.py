#!/usr/bin/env python3
"""HiveMind publish → delivery latency with many WebSocket subscribers, the highest
sustained durable publish rate, and NATS and Redis pub/sub as reference floors.

Same machine, same run, same shape for all three:
- `alai serve` (embedded PostgreSQL, default durability: fsync and synchronous commit on);
- one subscriber process holding N connections to the topic (alai: WebSocket
  `/v1/hive/stream?topic=bench.*&batch=true`; NATS: N connections on 127.0.0.1:4222
  with a subscription each; Redis: N pub/sub connections on 127.0.0.1:6379);
- one publisher process sending single messages at the target rate, each carrying
  the monotonic time just before it was sent (alai: the pipelined publishing
  WebSocket, every message acknowledged after its commit; NATS: PUBLISH; Redis:
  PUBLISH). Latency = receipt − that time, over every delivery to every subscriber.

Then the sustained rate: alai alone, publishers as fast as they are acknowledged
(durable: each acknowledgement comes after the commit), a subscriber checking that
every message is delivered; single-message frames from 4 connections, and frames of
100 messages from 2.

NATS core and Redis pub/sub keep nothing (no durability); they are floors for what
the network, the Python clients and the machine cost, not like-for-like systems. A
reference whose server is not running is skipped (said so in the output).

    python bench/hive_latency.py [--subscribers 100] [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import tempfile
import time
from pathlib import Path

import orjson
from support import running_serve

TOKEN = "bench-hive-token"
TOPIC = "bench.load"
NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379"
ACKS: list[float] = []  # alai: publish → acknowledgement (after the commit), seconds


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- subscribers (a child process) ------------------------------------------------------

def run(coroutine):
    # The standard asyncio loop, as most clients run: uvloop here made no difference to
    # alai's figures and made the NATS client's swing more from run to run.
    return asyncio.run(coroutine)


def subscriber_main(kind: str, target: list[str], subscribers: int, pipe) -> None:
    run(_subscribe(kind, target, subscribers, pipe))


async def _subscribe(kind: str, targets: list[str], subscribers: int, pipe) -> None:
    # While messages flow, each receipt is only stamped and kept (subscriber, time, raw
    # data); parsing and counting wait until publishing is over, so the measuring
    # process takes as little of the machine's two cores as it can, the same for all three.
    received: list[tuple[int, float, bytes | str]] = []
    keep = received.append
    closers = []

    if kind == "alai":
        import aiohttp

        # aiohttp's client: its C frame reader takes about a third of the CPU per frame
        # of the websockets library's, which left this process the busiest on the machine.
        session = aiohttp.ClientSession()
        # Spread over the replicas, one after the other.
        urls = [base + "/v1/hive/stream?topic=bench.*&batch=true" for base in targets]
        sockets = [await session.ws_connect(urls[n % len(urls)], headers={"Authorization": f"Bearer {TOKEN}"},
                                            autoping=True, max_msg_size=0) for n in range(subscribers)]

        async def listen(index: int, ws) -> None:
            while True:
                message = await ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    return
                keep((index, time.monotonic(), message.data))

        tasks = [asyncio.create_task(listen(index, ws)) for index, ws in enumerate(sockets)]
        closers = [ws.close for ws in sockets] + [session.close]
    elif kind == "nats":
        import nats

        connections = [await nats.connect(NATS_URL, max_reconnect_attempts=0) for _ in range(subscribers)]
        for index, nc in enumerate(connections):
            async def handler(msg, index=index) -> None:
                keep((index, time.monotonic(), msg.data))
            await nc.subscribe(TOPIC, cb=handler)
            await nc.flush()
        tasks = []
        closers = [nc.close for nc in connections]
    else:
        import redis.asyncio as redis

        clients = [redis.Redis.from_url(REDIS_URL) for _ in range(subscribers)]
        pubsubs = [client.pubsub(ignore_subscribe_messages=True) for client in clients]
        for pubsub in pubsubs:
            await pubsub.subscribe(TOPIC)

        async def listen(index: int, pubsub) -> None:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    keep((index, time.monotonic(), message["data"]))

        tasks = [asyncio.create_task(listen(index, pubsub)) for index, pubsub in enumerate(pubsubs)]
        closers = [pubsub.aclose for pubsub in pubsubs] + [client.aclose for client in clients]

    await asyncio.sleep(0.5)  # every subscription in place
    pipe.send("ready")
    expected = await asyncio.to_thread(pipe.recv)  # how many each should get, once publishing is over
    deadline, seen = time.monotonic() + 15, -1
    while len(received) != seen and time.monotonic() < deadline:  # until nothing more arrives
        seen = len(received)
        await asyncio.sleep(0.5)
    for task in tasks:
        task.cancel()
    for close in closers:
        try:
            await asyncio.wait_for(close(), 2)
        except Exception:
            pass
    latencies: list[float] = []
    first: dict[int, float] = {}
    for _index, now, raw in received:
        payloads = [m["payload"] for m in orjson.loads(raw)] if kind == "alai" else [orjson.loads(raw)]
        for payload in payloads:
            latency = now - payload["t"]
            latencies.append(latency)
            if latency < first.get(payload["n"], 1e9):
                first[payload["n"]] = latency
    ordered = sorted(latencies)
    firsts = sorted(first.values())
    pipe.send({"first_p50": percentile(firsts, 0.5) if firsts else None,"delivered": len(ordered), "expected": expected * subscribers,
               "p50": percentile(ordered, 0.5) if ordered else None,
               "p99": percentile(ordered, 0.99) if ordered else None,
               "max": ordered[-1] if ordered else None})


# -- publishers -----------------------------------------------------------------------------

async def paced(rate: float, total: int, send) -> float:
    """Calls `send(n)` total times at `rate` per second; returns the rate achieved."""
    started = time.monotonic()
    for n in range(total):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(n)
    return total / (time.monotonic() - started)


async def publish_alai(base: str, rate: float, total: int) -> float:
    import aiohttp

    # aiohttp, as the subscribers (see _subscribe): the lighter client on shared cores.
    async with aiohttp.ClientSession() as session, \
            session.ws_connect(base + "/v1/hive/publish", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        acked = 0
        errors: list[str] = []
        sent_at: dict[int, float] = {}

        async def read_acks() -> None:
            nonlocal acked
            async for message in ws:
                answer = orjson.loads(message.data)
                ACKS.append(time.monotonic() - sent_at[answer["ref"]])
                if "error" in answer:
                    errors.append(answer["error"]["detail"])
                acked += 1
                if acked == total:
                    return

        reader = asyncio.create_task(read_acks())

        async def send(n: int) -> None:
            sent_at[n] = now = time.monotonic()
            await ws.send_str(orjson.dumps({"topic": TOPIC, "ref": n, "json": {"n": n, "t": now}}).decode())

        achieved = await paced(rate, total, send)
        await asyncio.wait_for(reader, 30)
        if errors:
            raise SystemExit(f"publishing failed: {errors[0]}")
        return achieved


async def publish_nats(rate: float, total: int) -> float:
    import nats

    nc = await nats.connect(NATS_URL)

    async def send(n: int) -> None:
        await nc.publish(TOPIC, orjson.dumps({"n": n, "t": time.monotonic()}))
        await nc.flush()  # sent now, as the others are, not gathered into a later write

    achieved = await paced(rate, total, send)
    await nc.close()
    return achieved


async def publish_redis(rate: float, total: int) -> float:
    import redis.asyncio as redis

    client = redis.Redis.from_url(REDIS_URL)

    async def send(n: int) -> None:
        await client.publish(TOPIC, orjson.dumps({"n": n, "t": time.monotonic()}))

    achieved = await paced(rate, total, send)
    await client.aclose()
    return achieved


def reachable(url: str) -> bool:
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=1):
            return True
    except OSError:
        return False


def latency_run(kind: str, bases: list[str], subscribers: int, rate: float, seconds: float) -> dict:
    total = int(rate * seconds)
    base = bases[0]  # the publisher's replica
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("fork").Process(target=subscriber_main,
                                                          args=(kind, bases, subscribers, child))
    process.start()
    if not parent.poll(60) or parent.recv() != "ready":
        raise SystemExit(f"{kind} subscribers did not start")
    publish = {"alai": lambda: publish_alai(base, rate, total), "nats": lambda: publish_nats(rate, total),
               "redis": lambda: publish_redis(rate, total)}[kind]
    ACKS.clear()
    achieved = run(publish())
    parent.send(total)
    result = parent.recv()
    if ACKS:
        acks = sorted(ACKS)
        result["ack_p50"], result["ack_p99"] = percentile(acks, 0.5), percentile(acks, 0.99)
    process.join(30)
    result["achieved"] = achieved
    return result


# -- the sustained rate -----------------------------------------------------------------------

async def sustained(base: str, *, connections: int, per_frame: int, seconds: float, window: int) -> tuple[float, int]:
    """Publishes as fast as acknowledgements come back (at most `window` frames in
    flight per connection); returns (acknowledged messages per second, messages)."""
    import websockets

    url = base.replace("http://", "ws://") + "/v1/hive/publish"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    stop_at = time.monotonic() + seconds
    acked = 0

    async def one() -> None:
        nonlocal acked
        async with websockets.connect(url, additional_headers=headers, max_queue=None) as ws:
            credit = asyncio.Semaphore(window)
            sent = received = 0
            sending = True

            async def read() -> None:
                nonlocal acked, received
                async for raw in ws:
                    answer = orjson.loads(raw)
                    if "error" in answer:
                        raise SystemExit(f"publishing failed: {answer['error']['detail']}")
                    acked += per_frame
                    received += 1
                    credit.release()
                    if not sending and received == sent:
                        return

            reader = asyncio.create_task(read())
            while True:
                await credit.acquire()
                if time.monotonic() >= stop_at:
                    break
                if per_frame == 1:
                    frame = {"topic": "bench.rate", "json": {"n": sent}}
                else:
                    frame = {"topic": "bench.rate", "messages": [{"json": {"n": sent, "i": i}} for i in range(per_frame)]}
                await ws.send(orjson.dumps(frame).decode())
                sent += 1
            sending = False
            if received == sent:  # every answer is in: the reader may be waiting for more
                reader.cancel()
            await asyncio.wait_for(asyncio.gather(reader, return_exceptions=True), 30)

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(connections)))
    return acked / (time.monotonic() - started), acked


async def count_delivered(base: str, expected: int, after: str) -> int:
    """Subscribes from `after` and counts bench.rate messages until `expected` arrived (or 20 s)."""
    import websockets

    url = base.replace("http://", "ws://") + f"/v1/hive/stream?topic=bench.rate&batch=true&after={after}"
    got = 0
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"},
                                  max_queue=None) as ws:
        deadline = time.monotonic() + 20
        while got < expected and time.monotonic() < deadline:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if raw.startswith("["):
                got += len(orjson.loads(raw))
    return got


def last_position(base: str, topic: str) -> str:
    import httpx

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        response = http.get(f"/v1/hive/topics/{topic}/messages", params={"order": "desc", "limit": 1})
        items = response.json()["items"] if response.status_code == 200 else []
        return items[0]["position"] if items else "0-0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--quick", action="store_true", help="alai's latency only (no references, no rate)")
    parser.add_argument("--replicas", type=int, default=2,
                        help="also measure with this many `alai serve` replicas on one database, subscribers "
                             "spread over them, the publisher on the first (1: skip)")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="alai-bench-hive-") as tmp, running_serve(Path(tmp), token=TOKEN) as base:
        # A short warm-up: topic created, connections and caches warm.
        latency_run("alai", [base], 5, 200, 1)
        results["alai"] = latency_run("alai", [base], args.subscribers, args.rate, args.seconds)
        if args.replicas > 1:
            from alai.server.db.embedded import EmbeddedPostgres

            url = EmbeddedPostgres.url_of_running(Path(tmp) / "data")
            with contextlib.ExitStack() as others:
                bases = [base] + [others.enter_context(running_serve(Path(tmp) / f"replica-{n}", token=TOKEN,
                                                                     database_url=url))
                                  for n in range(1, args.replicas)]
                results[f"alai ×{args.replicas}"] = latency_run("alai", bases, args.subscribers, args.rate,
                                                                 args.seconds)
        for kind, url in (("nats", NATS_URL), ("redis", REDIS_URL)):
            if args.quick:
                break
            if reachable(url):
                results[kind] = latency_run(kind, [base], args.subscribers, args.rate, args.seconds)
            else:
                print(f"{kind}: nothing listening at {url}; reference skipped")
        rates = {}
        for label, connections, per_frame in (("single-message frames, 4 connections", 4, 1),
                                              ("frames of 100 messages, 2 connections", 2, 100)):
            if args.quick:
                break
            after = last_position(base, "bench.rate")
            rate, published = run(sustained(base, connections=connections, per_frame=per_frame,
                                                    seconds=args.seconds, window=200 if per_frame == 1 else 8))
            delivered = run(count_delivered(base, published, after))
            rates[label] = (rate, published, delivered)

    for kind, result in results.items():
        if result["p50"] is None:
            print(f"{kind}: nothing delivered")
            continue
        print(f"{kind:<8} {args.subscribers} subscribers at {result['achieved']:,.0f} msg/s: "
              f"deliveries {result['delivered']:,} of {result['expected']:,}; "
              f"p50 {result['p50'] * 1000:.1f} ms, p99 {result['p99'] * 1000:.1f} ms, max {result['max'] * 1000:.0f} ms; "
              f"first subscriber p50 {result['first_p50'] * 1000:.1f} ms"
              + (f"; publish acknowledged (committed) p50 {result['ack_p50'] * 1000:.1f} ms, "
                 f"p99 {result['ack_p99'] * 1000:.1f} ms" if "ack_p50" in result else ""))
    for label, (rate, published, delivered) in rates.items():
        print(f"sustained durable publish, {label}: {rate:,.0f} msg/s acknowledged after commit "
              f"({published:,} messages; a subscriber got {delivered:,})")
    alai = results["alai"]
    best = max((rate for rate, _, _ in rates.values()), default=0)
    if alai["p50"] is None:
        print(f"hive_latency: nothing was delivered ({alai['delivered']:,} of {alai['expected']:,}); "
              f"highest sustained durable rate {best:,.0f} msg/s")
        return 1
    print(f"hive_latency: publish → delivery p50 {alai['p50'] * 1000:.1f} ms, p99 {alai['p99'] * 1000:.1f} ms with "
          f"{args.subscribers} WebSocket subscribers at {alai['achieved']:,.0f} msg/s; "
          f"highest sustained durable rate {best:,.0f} msg/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
