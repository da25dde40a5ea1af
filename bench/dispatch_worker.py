"""The child processes of bench/dispatch.py. Each reports on stdout, one line per
event, `<key> <time.monotonic()>` (CLOCK_MONOTONIC is one clock for every process on
Linux, so the parent compares these with its own readings).

    alai-worker   an alai worker: alai.node.daemon.Daemon with a no-op executor that
                  reports the run id when it starts (alai's virtual environment)
    pgq-consume   a PgQueuer consumer with a no-op entrypoint that reports the job's
                  payload when it starts (PgQueuer's virtual environment)
    pgq-produce   PgQueuer producers: for each number N read from stdin, N jobs, one
                  per enqueue call, from `--connections` connections at once
    pgq-send      one job per line read from stdin (its payload), reported just before
                  the enqueue call
    pgq-install   PgQueuer's tables in the database given

This file runs under two interpreters: nothing but the standard library at the top.
"""

from __future__ import annotations

import os
import sys

# Not this file's folder: bench/ holds scripts named like standard modules (secrets.py)
# that asyncpg and others would import instead.
sys.path[:] = [entry for entry in sys.path
               if os.path.abspath(entry or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402


def report(key: object, at: float) -> None:
    os.write(1, f"{key} {at:.6f}\n".encode())


# -- alai ----------------------------------------------------------------------------------

def alai_worker(args: argparse.Namespace) -> None:
    import logging

    import structlog

    from alai.node.daemon import Config, Daemon
    from alai.node.executors import Outcome

    # stdout carries the report: the daemon's per-run info lines go nowhere (as at
    # ALAI_LOG_LEVEL=warning); its warnings go to stderr.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    async def capabilities() -> list[str]:
        return ["executor:llm", "model:noop:latest"]

    async def execute(execution, emit) -> Outcome:
        report(execution.spec.run_id, time.monotonic())
        return Outcome("succeeded", output="")

    config = Config(server=args.server, token=args.token, name=args.name, kind="worker",
                    concurrency=args.concurrency, grace_seconds=5.0)
    asyncio.run(Daemon(config, capabilities=capabilities, executor=execute).run())


# -- PgQueuer ------------------------------------------------------------------------------

async def _pgq_consume(args: argparse.Namespace) -> None:
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.models import Job

    connection = await asyncpg.connect(dsn=args.dsn)
    pgq = PgQueuer.from_asyncpg_connection(connection)

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        report(job.payload.decode() if job.payload else "-", time.monotonic())

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pgq.shutdown.set)
    report("ready", time.monotonic())
    await pgq.run(batch_size=args.batch_size)


async def _pgq_produce(args: argparse.Namespace) -> None:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    producers = [Queries(AsyncpgDriver(await asyncpg.connect(dsn=args.dsn))) for _ in range(args.connections)]
    report("ready", time.monotonic())
    while line := (await asyncio.to_thread(sys.stdin.readline)).strip():  # how many jobs, this time
        numbers = iter(range(int(line)))

        async def produce(queries, numbers=numbers) -> None:
            for n in numbers:
                await queries.enqueue("noop", str(n).encode(), 0)

        report("start", time.monotonic())
        await asyncio.gather(*(produce(queries) for queries in producers))
        report("done", time.monotonic())


async def _pgq_send(args: argparse.Namespace) -> None:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    queries = Queries(AsyncpgDriver(await asyncpg.connect(dsn=args.dsn)))
    report("ready", time.monotonic())
    while line := (await asyncio.to_thread(sys.stdin.readline)).strip():
        sent = time.monotonic()
        await queries.enqueue("noop", line.encode(), 0)
        report(line, sent)


async def _pgq_install(args: argparse.Namespace) -> None:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.queries import Queries

    connection = await asyncpg.connect(dsn=args.dsn)
    await Queries(AsyncpgDriver(connection)).install()
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("alai-worker")
    worker.add_argument("--server", required=True)
    worker.add_argument("--token", required=True)
    worker.add_argument("--name", required=True)
    worker.add_argument("--concurrency", type=int, default=4)
    for name in ("pgq-install", "pgq-consume", "pgq-produce", "pgq-send"):
        command = commands.add_parser(name)
        command.add_argument("--dsn", required=True)
        command.add_argument("--batch-size", type=int, default=10)
        command.add_argument("--connections", type=int, default=1)
    args = parser.parse_args()
    if args.command == "alai-worker":
        alai_worker(args)
        return
    coroutine = {"pgq-install": _pgq_install, "pgq-consume": _pgq_consume, "pgq-produce": _pgq_produce,
                 "pgq-send": _pgq_send}[args.command]
    asyncio.run(coroutine(args))


if __name__ == "__main__":
    main()
