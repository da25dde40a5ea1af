#!/usr/bin/env python3
"""The runner's dispatch: `POST /v1/runs` → executor start latency with a warm worker,
and no-op runs completed per second through the HTTP API; PgQueuer on the same
PostgreSQL server as the reference for the queue core (issue 7, "Figures").

Same machine, same run:
- PostgreSQL: the machine's server (`--postgres`, default postgresql://postgres@127.0.0.1:5432/),
  a fresh database for each `alai serve` and one for PgQueuer, dropped at the end;
  the server's own durability settings (printed).
- two `alai serve` processes side by side, one with the default settings and one with
  ALAI_RUNS_PUBLISH_STATES=false (no HiveMind message per state change); every other
  runner setting explicit at its default (printed). Rounds alternate between them and
  PgQueuer, so that drift of the machine hits all alike.
- workers: bench/dispatch_worker.py processes running alai.node.daemon.Daemon (the
  loop of `alai worker`; its per-run info log lines off) with a no-op executor that
  reports time.monotonic() when it starts; CLOCK_MONOTONIC is one clock for every
  process on Linux.
- clients: this process, HTTP/1.1 keep-alive on asyncio streams (a minimal client,
  so that the load generator costs the 2 cores little).

1. Latency: one worker (concurrency 4, the CLI's default), idle and long-polling;
   runs posted one at a time, each after the previous one has succeeded and the worker
   is waiting again (20–35 ms later). Latency = executor start − the moment before
   the POST was written. Targets: p50 ≤ 15 ms, p95 ≤ 35 ms. PgQueuer: one consumer
   waiting (LISTEN), one producer process; enqueue call → entrypoint start.
2. Throughput: `--runs` runs created by `--clients` concurrent keep-alive connections
   (one run per POST), `--workers` worker processes of `--concurrency` each; from the
   first POST to the moment no run is left queued or running (checked in the database
   every 10 ms, once every POST was answered; then all must be `succeeded`). Target ≥ 500 runs/s. PgQueuer: the same number of jobs enqueued one per
   call from as many connections, two consumer processes (batch size = --concurrency);
   from the first enqueue to the last entrypoint start, and to the queue table empty
   (PgQueuer writes completions in batches).

PgQueuer (PyPI, pinned below) is installed once into its own virtual environment
under /tmp. Standard asyncio loops in workers and consumers (as `alai worker` runs).

Other processes on the machine (a test suite) skew the figures: each round reports the
CPU they used meanwhile (/proc), and the summary counts only rounds during which they
used at most 0.2 cores, when there are any (else all, and says so).

    python bench/dispatch.py [--latency-runs 300] [--runs 1000] [--rounds 3] [--no-pgqueuer]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pwd
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
from psycopg import sql
from support import running_serve

HERE = Path(__file__).resolve().parent
MY_PID = os.getpid()
try:
    POSTGRES_UID = pwd.getpwnam("postgres").pw_uid
except KeyError:  # PostgreSQL runs elsewhere: none of its CPU is on this machine
    POSTGRES_UID = -1
WORKER = HERE / "dispatch_worker.py"
TOKEN = "bench-dispatch-token"
PGQUEUER_VERSION = "1.6.0"
PGQUEUER_VENV = Path(f"/tmp/alai-bench-pgqueuer-{PGQUEUER_VERSION}-venv")
AGENT = "---\nname: noop\ndescription: does nothing\nmodel: noop\n---\nNothing to do.\n"
# Every runner setting the figures depend on, at its default unless said otherwise.
SERVER_SETTINGS = {"ALAI_RUNS_SWEEP_SECONDS": "1.0", "ALAI_RUNS_LEASE_SECONDS": "30",
                   "ALAI_NODES_OFFLINE_SECONDS": "20", "ALAI_DB_POOL_MIN": "1", "ALAI_DB_POOL_MAX": "10",
                   "ALAI_LOG_LEVEL": "warning"}
PENDING = ("SELECT EXISTS (SELECT 1 FROM runs WHERE state IN ('queued', 'waiting')) "
           "OR EXISTS (SELECT 1 FROM runs WHERE state = 'running')")
CONFIGS = {"alai": {"ALAI_RUNS_PUBLISH_STATES": "true"}, "alai no-publish": {"ALAI_RUNS_PUBLISH_STATES": "false"}}


def pct(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ms(value: float) -> str:
    return f"{value * 1000:6.2f}"


# -- what else the machine was doing -----------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


class Machine:
    """What CPU other processes used: the machine's busy time less that of this
    process's tree (children that ended count in their parent's cutime/cstime), of the
    PostgreSQL backends serving the bench's databases, and of PostgreSQL's own
    background processes. Backends of other databases (a test suite's) are others'."""

    def __init__(self, admin_url: str) -> None:
        self.conn = psycopg.connect(admin_url, autocommit=True)
        self.databases: set[str] = set()

    def close(self) -> None:
        self.conn.close()

    def _postgres_theirs(self) -> set[int]:
        """PostgreSQL backends (and autovacuum workers) of databases that are not the bench's."""
        return {pid for pid, database, kind in self.conn.execute(
                    "SELECT pid, datname, backend_type FROM pg_stat_activity WHERE pid <> pg_backend_pid()")
                if database not in self.databases and (database is not None or kind == "client backend")}

    def sample(self) -> tuple[float, dict[int, float]]:
        """(busy CPU seconds of the machine, CPU seconds of each process that is ours)."""
        postgres_theirs = self._postgres_theirs()
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, f.readline().split()[1:9])
        parents, own, reaped, owners = {}, {}, {}, {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    owners[int(entry)] = os.stat(f"/proc/{entry}").st_uid
                except OSError:
                    continue
                pid = int(entry)
                parents[pid] = int(fields[1])
                own[pid] = (int(fields[11]) + int(fields[12])) / TICK
                reaped[pid] = (int(fields[13]) + int(fields[14])) / TICK
        ours = {}
        for pid in own:
            ancestor = pid
            while ancestor > 1 and ancestor != MY_PID:
                ancestor = parents.get(ancestor, 0)
            if ancestor == MY_PID:
                ours[pid] = own[pid] + reaped[pid]
            elif owners[pid] == POSTGRES_UID and pid not in postgres_theirs:
                ours[pid] = own[pid]  # not reaped: the postmaster's ended backends may be anyone's
        return (user + nice + system + irq + softirq + steal) / TICK, ours


class Elsewhere:
    """The cores other processes used during a block (see Machine)."""

    machine: Machine | None = None

    def __enter__(self) -> Elsewhere:
        self.began, self.cores = time.monotonic(), 0.0
        if self.machine is not None:
            self.busy, self.ours = self.machine.sample()
        return self

    def __exit__(self, *exc) -> None:
        if self.machine is None:
            return
        busy, ours = self.machine.sample()
        mine = sum(seconds - self.ours.get(pid, 0.0) for pid, seconds in ours.items())
        self.cores = max(0.0, (busy - self.busy) - mine) / (time.monotonic() - self.began)


# -- processes that report `<key> <monotonic>` lines ------------------------------------------

class Child:
    def __init__(self, command: list[str], log: Path, *, stdin: bool = False) -> None:
        self.log = log
        self.err = open(log, "wb")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.err,
                                        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL)
        self.lines: queue.Queue[tuple[str, float]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            key, at = raw.decode().split()
            self.lines.put((key, float(at)))

    def next(self, timeout: float = 10) -> tuple[str, float]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise SystemExit(f"{self.process.args[2]} said nothing for {timeout} s:\n"
                             f"{self.log.read_text()[-3000:]}") from None

    def drain(self) -> list[tuple[str, float]]:
        out = []
        with contextlib.suppress(queue.Empty):
            while True:
                out.append(self.lines.get_nowait())
        return out

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.err.close()


def collect(children: list[Child], expected: int) -> list[float]:
    """The times of `expected` reports from these children (all of them, in any order)."""
    out: list[float] = []
    deadline = time.monotonic() + 5
    while len(out) < expected and time.monotonic() < deadline:
        for child in children:
            out += [at for _, at in child.drain()]
        time.sleep(0.01)
    if len(out) != expected:
        raise SystemExit(f"{len(out)} starts reported, {expected} expected")
    return out


# -- a minimal keep-alive HTTP/1.1 client ------------------------------------------------------

class Http:
    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Http:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.writer is not None
        self.writer.close()

    def send(self, method: str, path: str, body: bytes = b"") -> None:
        assert self.writer is not None
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                          f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    async def receive(self) -> tuple[int, bytes]:
        assert self.reader is not None
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def call(self, method: str, path: str, body: object = None) -> tuple[int, dict | list]:
        self.send(method, path, orjson.dumps(body) if body is not None else b"")
        status, raw = await self.receive()
        return status, orjson.loads(raw) if raw else {}


# -- set-up ----------------------------------------------------------------------------------

def ensure_pgqueuer() -> Path | None:
    python = PGQUEUER_VENV / "bin" / "python"
    if python.exists():
        return python
    print(f"installing pgqueuer=={PGQUEUER_VERSION} into its own virtual environment (once) …", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(PGQUEUER_VENV)], check=True)
        subprocess.run([str(PGQUEUER_VENV / "bin" / "pip"), "install", "-q", f"pgqueuer[asyncpg]=={PGQUEUER_VERSION}"],
                       check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as error:
        print(f"pgqueuer could not be installed ({error}); its reference is skipped", flush=True)
        shutil.rmtree(PGQUEUER_VENV, ignore_errors=True)
        return None
    return python


def create_database(admin_url: str, prefix: str) -> tuple[str, str]:
    name = f"{prefix}_{os.getpid()}_{random.randrange(16**6):06x}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def start_alai_workers(base: str, label: str, count: int, concurrency: int, logs: Path) -> list[Child]:
    slug = label.replace(" ", "-")
    return [Child([sys.executable, str(WORKER), "alai-worker", "--server", base, "--token", TOKEN,
                   "--name", f"bench-{slug}-{n}", "--concurrency", str(concurrency)],
                  logs / f"worker-{slug}-{n}.log") for n in range(count)]


async def put_agents(bases) -> None:
    for base in bases:
        async with Http(base) as http:
            status, answer = await http.call("PUT", "/v1/agents/noop", {"definition": AGENT})
            if status >= 300:
                raise SystemExit(f"PUT /v1/agents/noop answered {status}: {answer}")


async def wait_online(base: str, names: set[str]) -> None:
    async with Http(base) as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, listed = await http.call("GET", "/v1/nodes")
            if names <= {node["name"] for node in listed if node["online"]}:
                await asyncio.sleep(0.5)  # their first long polls are in
                return
            await asyncio.sleep(0.1)
    raise SystemExit(f"workers {sorted(names)} did not come online")


# -- 1. latency ------------------------------------------------------------------------------

async def alai_latency(base: str, worker: Child, runs: int) -> tuple[list[float], list[float]]:
    """(POST → executor start, POST → 201) in seconds."""
    starts, answers = [], []
    async with Http(base) as http:
        for _ in range(runs):
            body = orjson.dumps({"agent": "noop", "input": "x"})
            sent = time.monotonic()
            http.send("POST", "/v1/runs", body)
            status, raw = await http.receive()
            answered = time.monotonic()
            if status != 201:
                raise SystemExit(f"POST /v1/runs answered {status}: {raw[:300]!r}")
            run_id = orjson.loads(raw)["id"]
            key, started = await asyncio.to_thread(worker.next)
            if int(key) != run_id:
                raise SystemExit(f"the worker started run {key}, not {run_id}")
            starts.append(started - sent)
            answers.append(answered - sent)
            while (await http.call("GET", f"/v1/runs/{run_id}"))[1]["state"] != "succeeded":
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.02 + random.random() * 0.015)  # the worker's next long poll is waiting
    return starts, answers


def pgqueuer_latency(sender: Child, consumer: Child, jobs: int, offset: int) -> list[float]:
    out = []
    for n in range(offset, offset + jobs):
        sender.send(str(n))
        key, sent = sender.next()
        started_key, started = consumer.next()
        if key != str(n) or started_key != str(n):
            raise SystemExit(f"PgQueuer: sent {key}, started {started_key}, expected {n}")
        out.append(started - sent)
        time.sleep(0.02 + random.random() * 0.015)
    return out


# -- 2. throughput ----------------------------------------------------------------------------

async def alai_throughput(base: str, database_url: str, workers: list[Child], runs: int,
                          clients: int) -> dict[str, float]:
    for worker in workers:
        worker.drain()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        first_id = (await (await db.execute("SELECT coalesce(max(id), 0) FROM runs")).fetchone())[0]
        numbers = iter(range(runs))
        body = orjson.dumps({"agent": "noop", "input": "x"})
        created_at: list[float] = []

        async def client() -> None:
            async with Http(base) as http:
                for _ in numbers:
                    http.send("POST", "/v1/runs", body)
                    status, raw = await http.receive()
                    if status != 201:
                        raise SystemExit(f"POST /v1/runs answered {status}: {raw[:300]!r}")
                created_at.append(time.monotonic())

        began = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), 120)
        # Every run exists now: done when none is pending (two small partial indexes).
        while (await (await db.execute(PENDING)).fetchone())[0]:
            if time.monotonic() > began + 120:
                raise SystemExit("runs still pending 120 s after the first POST")
            await asyncio.sleep(0.01)
        finished = time.monotonic()
        done = (await (await db.execute("SELECT count(*) FROM runs WHERE state = 'succeeded' AND id > %s",
                                        (first_id,))).fetchone())[0]
        if done != runs:
            raise SystemExit(f"{done} of {runs} runs succeeded")
    starts = collect(workers, runs)
    return {"completed": runs / (finished - began), "created": runs / (max(created_at) - began),
            "started": runs / (max(starts) - began)}


def pgqueuer_throughput(producer: Child, dsn: str, jobs: int, consumers: list[Child]) -> dict[str, float]:
    for consumer in consumers:
        consumer.drain()
    producer.send(str(jobs))
    _, began = producer.next()
    _, enqueued = producer.next(120)
    with psycopg.connect(dsn, autocommit=True) as db:
        deadline = time.monotonic() + 120
        while db.execute("SELECT EXISTS (SELECT 1 FROM pgqueuer)").fetchone()[0]:
            if time.monotonic() > deadline:
                raise SystemExit("PgQueuer's queue was not empty 120 s after the last enqueue")
            time.sleep(0.01)
        emptied = time.monotonic()
    starts = collect(consumers, jobs)
    return {"created": jobs / (enqueued - began), "started": jobs / (max(starts) - began),
            "completed": jobs / (emptied - began)}


# -- the bench -------------------------------------------------------------------------------

QUIET_CORES = 0.2  # a round during which other processes used more is left out of the summary


@dataclass
class Round:
    kind: str  # "latency" | "throughput"
    label: str
    other: float  # cores that other processes used meanwhile
    starts: list[float] = field(default_factory=list)  # POST (enqueue) → executor (entrypoint) start
    answers: list[float] = field(default_factory=list)  # POST → 201
    rate: dict[str, float] = field(default_factory=dict)

    def line(self, number: int) -> str:
        if self.kind == "latency":
            figures = f"p50 {ms(pct(self.starts, 0.5))} ms  p95 {ms(pct(self.starts, 0.95))} ms"
        else:
            figures = (f"{self.rate['completed']:7,.0f}/s completed, {self.rate['started']:,.0f}/s started, "
                       f"{self.rate['created']:,.0f}/s created")
        return f"{self.kind} round {number} {self.label:<16} {figures}  (other processes: {self.other:.2f} cores)"


def measured(kind: str, label: str, work, *arguments) -> Round:
    with Elsewhere() as other:
        result = work(*arguments)
    if kind == "latency":
        starts, answers = result if isinstance(result, tuple) else (result, [])
        return Round(kind, label, other.cores, starts=starts, answers=answers)
    return Round(kind, label, other.cores, rate=result)


def latency_phase(args, bases: dict[str, str], python: Path | None, databases: dict, logs: Path,
                  children: list[Child], report) -> None:
    """One warm worker per server (concurrency 4, the CLI's default), one PgQueuer consumer."""
    single = {label: start_alai_workers(base, f"{label}-latency", 1, 4, logs)[0] for label, base in bases.items()}
    children += single.values()
    for label, base in bases.items():
        asyncio.run(wait_online(base, {f"bench-{label.replace(' ', '-')}-latency-0"}))
    if python is not None:
        dsn = databases["pgqueuer"][1]
        consumer = Child([str(python), str(WORKER), "pgq-consume", "--dsn", dsn], logs / "pgq-latency.log")
        sender = Child([str(python), str(WORKER), "pgq-send", "--dsn", dsn], logs / "pgq-send.log", stdin=True)
        children += [consumer, sender]
        consumer.next(30), sender.next(30)
        time.sleep(1.0)  # the consumer is listening
    # A warm-up: connections, caches, the workers' first claims.
    for label, base in bases.items():
        asyncio.run(alai_latency(base, single[label], 20))
    if python is not None:
        pgqueuer_latency(sender, consumer, 20, 0)
    per_round = max(1, args.latency_runs // args.rounds)
    for number in range(1, args.rounds + 1):
        for label, base in bases.items():
            report(number, measured("latency", label, lambda *a: asyncio.run(alai_latency(*a)),
                                    base, single[label], per_round))
        if python is not None:
            report(number, measured("latency", "pgqueuer", pgqueuer_latency, sender, consumer, per_round,
                                    100 + number * per_round))


def throughput_phase(args, bases: dict[str, str], python: Path | None, databases: dict, logs: Path,
                     children: list[Child], report) -> None:
    pools = {label: start_alai_workers(base, label, args.workers, args.concurrency, logs)
             for label, base in bases.items()}
    children += [worker for workers in pools.values() for worker in workers]
    for label, base in bases.items():
        asyncio.run(wait_online(base, {f"bench-{label.replace(' ', '-')}-{n}" for n in range(args.workers)}))
    if python is not None:
        dsn = databases["pgqueuer"][1]
        consumers = [Child([str(python), str(WORKER), "pgq-consume", "--dsn", dsn, "--batch-size",
                            str(args.concurrency)], logs / f"pgq-consume-{n}.log") for n in range(2)]
        producer = Child([str(python), str(WORKER), "pgq-produce", "--dsn", dsn, "--connections", str(args.clients)],
                         logs / "pgq-produce.log", stdin=True)
        children += [*consumers, producer]
        for child in (*consumers, producer):
            child.next(30)
        time.sleep(1.0)  # the consumers are listening

    def alai(label: str, runs: int) -> dict[str, float]:
        return asyncio.run(alai_throughput(bases[label], databases[label][1], pools[label], runs, args.clients))

    def pgqueuer(jobs: int) -> dict[str, float]:
        return pgqueuer_throughput(producer, dsn, jobs, consumers)

    warm = max(100, args.runs // 10)
    for label in bases:
        alai(label, warm)
    if python is not None:
        pgqueuer(warm)
    for number in range(1, args.rounds + 1):
        for label in bases:
            report(number, measured("throughput", label, alai, label, args.runs))
        if python is not None:
            report(number, measured("throughput", "pgqueuer", pgqueuer, args.runs))


def quiet_count(rounds: list[Round]) -> int:
    return sum(r.other <= QUIET_CORES for r in rounds)


def summary(args, rounds: list[Round], setting: str, seconds: float) -> None:
    others = [r.other for r in rounds]
    print()
    print(f"the bench took {seconds:.0f} s; {os.cpu_count()} cores; {setting}; pgqueuer {PGQUEUER_VERSION}")
    print("server: " + " ".join(f"{key}={value}" for key, value in SERVER_SETTINGS.items())
          + "; ALAI_RUNS_PUBLISH_STATES=true (alai) / false (alai no-publish)")
    print(f"latency: {args.rounds} rounds × {max(1, args.latency_runs // args.rounds)} runs, one at a time, to an "
          f"idle long-polling worker (concurrency 4); throughput: {args.runs} runs a round from {args.clients} "
          f"keep-alive connections, {args.workers} workers × concurrency {args.concurrency} (PgQueuer: "
          f"{args.clients} enqueuing connections, 2 consumers, batch {args.concurrency})")
    print(f"other processes used up to {max(others):.2f} cores during a round (median {pct(others, 0.5):.2f}); "
          f"rounds above {QUIET_CORES} are left out below when quieter ones exist (rounds: quiet/all)")
    print()
    print(f"{'':<16} {'start p50':>9} {'start p95':>9} {'start max':>9} {'201 p50':>9} {'rounds':>6}   "
          f"{'completed/s (min–max)':>22} {'started/s':>9} {'created/s':>9} {'rounds':>6}")
    headline: dict[str, tuple[float, float, float]] = {}
    busy = 0.0  # the most other processes used in a round that the summary counts
    for label in [*CONFIGS, "pgqueuer"]:
        latency = [r for r in rounds if r.kind == "latency" and r.label == label]
        rates = [r for r in rounds if r.kind == "throughput" and r.label == label]
        if not latency or not rates:
            continue
        quiet_latency = [r for r in latency if r.other <= QUIET_CORES] or latency
        quiet_rates = [r for r in rates if r.other <= QUIET_CORES] or rates
        starts = [value for r in quiet_latency for value in r.starts]
        answers = [value for r in quiet_latency for value in r.answers]
        median = {key: pct([r.rate[key] for r in quiet_rates], 0.5) for key in ("completed", "started", "created")}
        done = sorted(r.rate["completed"] for r in quiet_rates)
        post = f"{ms(pct(answers, 0.5))} ms" if answers else f"{'—':>9}"
        spread = f"{median['completed']:,.0f} ({done[0]:,.0f}–{done[-1]:,.0f})"
        print(f"{label:<16} {ms(pct(starts, 0.5))} ms {ms(pct(starts, 0.95))} ms {ms(max(starts))} ms {post} "
              f"{f'{quiet_count(latency)}/{len(latency)}':>6}   {spread:>22} {median['started']:9,.0f} "
              f"{median['created']:9,.0f} {f'{quiet_count(rates)}/{len(rates)}':>6}")
        busy = max([busy, *(r.other for r in quiet_latency + quiet_rates)])
        headline[label] = (pct(starts, 0.5), pct(starts, 0.95), median["started" if label == "pgqueuer" else "completed"])
    print("(completed/s: median of the rounds; PgQueuer's counts to its queue table empty, as it writes "
          "completions in batches; started/s: to the last executor (entrypoint) start)")
    p50, p95, rate = headline["alai"]
    off = headline["alai no-publish"][2]
    reference = ""
    if "pgqueuer" in headline:
        theirs = headline["pgqueuer"]
        reference = (f"; PgQueuer enqueue→start p50 {theirs[0] * 1000:.1f} ms, p95 {theirs[1] * 1000:.1f} ms, "
                     f"{theirs[2]:,.0f} jobs/s")
    print(f"dispatch: POST → executor start p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms (targets 15 / 35); "
          f"{rate:,.0f} no-op runs/s completed through the API ({off:,.0f} without HiveMind publishing; "
          f"target 500){reference}"
          + (f" — NOT QUIET: other processes used up to {busy:.2f} cores in rounds counted" if busy > QUIET_CORES
             else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL server on which the bench may create and drop databases")
    parser.add_argument("--latency-runs", type=int, default=300, help="per system, over all rounds")
    parser.add_argument("--runs", type=int, default=1000, help="runs (jobs) per throughput round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-pgqueuer", action="store_true")
    args = parser.parse_args()

    python = None if args.no_pgqueuer else ensure_pgqueuer()
    began = time.monotonic()
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        setting = f"PostgreSQL {conn.execute('SHOW server_version').fetchone()[0]} (" + ", ".join(
            f"{name}={conn.execute(f'SHOW {name}').fetchone()[0]}"
            for name in ("fsync", "synchronous_commit", "shared_buffers")) + ")"
    databases: dict[str, tuple[str, str]] = {}
    children: list[Child] = []
    rounds: list[Round] = []
    Elsewhere.machine = machine = Machine(args.postgres)

    def report(number: int, measurement: Round) -> None:
        rounds.append(measurement)
        print(measurement.line(number), flush=True)

    try:
        for label in CONFIGS:
            databases[label] = create_database(args.postgres, "bench_dispatch")
        if python is not None:
            databases["pgqueuer"] = create_database(args.postgres, "bench_pgqueuer")
            subprocess.run([str(python), str(WORKER), "pgq-install", "--dsn", databases["pgqueuer"][1]], check=True)
        machine.databases = {name for name, _ in databases.values()}
        with tempfile.TemporaryDirectory(prefix="alai-bench-dispatch-") as tmp, contextlib.ExitStack() as servers:
            logs = Path(tmp)
            bases = {label: servers.enter_context(running_serve(
                logs / label.replace(" ", "-"), token=TOKEN, database_url=databases[label][1],
                extra_env={**SERVER_SETTINGS, **settings})) for label, settings in CONFIGS.items()}
            asyncio.run(put_agents(bases.values()))
            for phase in (latency_phase, throughput_phase):
                phase(args, bases, python, databases, logs, children, report)
                for child in children:
                    child.stop()
                children.clear()
    finally:
        for child in children:
            child.stop()
        machine.close()
        for name, _ in databases.values():
            drop_database(args.postgres, name)
    summary(args, rounds, setting, time.monotonic() - began)


if __name__ == "__main__":
    main()
