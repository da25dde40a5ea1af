"""Usage and cost: one record per model request, written in batches, summed on demand.

Requests never wait for the database: records go to a bounded in-memory queue that a
task flushes every second (or at 500 records) with one multi-row INSERT; when the queue
is full (the database away for long), the oldest records are dropped and counted in
the log — answering models matters more than accounting for them.
Tokens come from the answer itself: Ollama's `prompt_eval_count`/`eval_count` (the
last NDJSON line), OpenAI's `usage`. Cost = tokens × the configured price per million.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import structlog
from fastapi.responses import StreamingResponse
from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from alai.server.deps import actor_name, current_principal
from alai.server.gateway.config import GatewayConfig

log = structlog.get_logger("alai.gateway.usage")
FLUSH_SECONDS = 1.0
FLUSH_AT = 500
QUEUE_MAX = 50_000
COLUMNS = ("at", "principal", "surface", "path", "model", "backend", "upstream_model", "status", "tokens_in",
           "tokens_out", "latency_ms", "first_byte_ms", "cost_usd")
GROUPS = {"backend": "backend", "model": "model", "principal": "principal", "day": "date_trunc('day', at)"}


@dataclass
class Record:
    at: datetime
    principal: str
    surface: str
    path: str
    model: str
    backend: str | None
    upstream_model: str | None
    status: int
    tokens_in: int | None
    tokens_out: int | None
    latency_ms: float
    first_byte_ms: float | None
    cost_usd: Decimal | None = None


def tokens_of(document: Any) -> tuple[int | None, int | None]:
    """(in, out) from an Ollama final line or an OpenAI answer/chunk."""
    if not isinstance(document, dict):
        return None, None
    if "prompt_eval_count" in document or "eval_count" in document:
        return document.get("prompt_eval_count"), document.get("eval_count")
    usage = document.get("usage")
    if isinstance(usage, dict):
        return usage.get("prompt_tokens", usage.get("input_tokens")), usage.get(
            "completion_tokens", usage.get("output_tokens"))
    return None, None


def tokens_in_tail(tail: bytes) -> tuple[int | None, int | None]:
    """The token counts in the last JSON line (or SSE data line) of a streamed answer."""
    for line in reversed(tail.splitlines()):
        line = line.strip()
        if line.startswith(b"data:"):
            line = line[5:].strip()
        if not line or line == b"[DONE]" or line.startswith((b"event:", b"id:", b":")):
            continue
        try:
            found = tokens_of(orjson.loads(line))
        except orjson.JSONDecodeError:
            return None, None
        if found != (None, None):
            return found
    return None, None


@dataclass(eq=False)
class UsageRecorder:
    pool: AsyncConnectionPool
    config: GatewayConfig
    _queue: deque[Record] = field(default_factory=lambda: deque(maxlen=QUEUE_MAX))
    _dropped: int = 0
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task | None = None

    def price(self, backend: str | None, upstream_model: str | None) -> tuple[Decimal, Decimal] | None:
        for price in self.config.prices:
            if price.backend == backend and price.model in (None, upstream_model):
                return Decimal(str(price.input_per_million)), Decimal(str(price.output_per_million))
        return None

    def record(self, record: Record) -> None:
        price = self.price(record.backend, record.upstream_model)
        if price is not None and (record.tokens_in is not None or record.tokens_out is not None):
            record.cost_usd = ((record.tokens_in or 0) * price[0] + (record.tokens_out or 0) * price[1]) / 1_000_000
        if len(self._queue) == self._queue.maxlen:
            self._dropped += 1
        self._queue.append(record)
        if len(self._queue) >= FLUSH_AT:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-usage")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), 5)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as error:  # the database away: keep the records, try again
                log.warning("usage records not written yet", error=str(error).splitlines()[0] if str(error) else "",
                            pending=len(self._queue))

    async def flush(self) -> int:
        if self._dropped:
            log.warning("usage records dropped (queue full)", dropped=self._dropped)
            self._dropped = 0
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), 5000))]
        if not batch:
            return 0
        try:
            async with self.pool.connection(timeout=5) as conn:
                try:
                    async with conn.transaction():  # all or none, so the fallback below writes nothing twice
                        await insert(conn, batch)
                except (errors.DataError, errors.IntegrityError):
                    # One record the database refuses must not stop accounting: row by row, the bad ones dropped.
                    for record in batch:
                        try:
                            await insert(conn, [record])
                        except (errors.DataError, errors.IntegrityError):
                            log.warning("usage record dropped: the database refused it", model=record.model[:80])
        except BaseException:  # the database away, or a stop in the middle: keep them for the next flush
            self._queue.extendleft(reversed(batch))
            raise
        return len(batch)


async def insert(conn: AsyncConnection, records: list[Record]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            f"INSERT INTO gateway_usage ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})",
            [tuple(getattr(record, column) for column in COLUMNS) for record in records])


async def summary(conn: AsyncConnection, *, since: datetime, by: str, principal: str | None) -> list[dict]:
    """Requests, errors, tokens, cost and latency per `by` since `since`."""
    key = GROUPS[by]
    where, params = ["at >= %s"], [since]
    if principal is not None:
        where.append("principal = %s")
        params.append(principal)
    rows = await (await conn.execute(
        f"""
        SELECT {key} AS key, count(*) AS requests, count(*) FILTER (WHERE status >= 400) AS errors,
               coalesce(sum(tokens_in), 0) AS tokens_in, coalesce(sum(tokens_out), 0) AS tokens_out,
               coalesce(sum(cost_usd), 0) AS cost_usd,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS latency_p50_ms,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS latency_p99_ms
        FROM gateway_usage WHERE {' AND '.join(where)} GROUP BY 1 ORDER BY cost_usd DESC, requests DESC
        """, params)).fetchall()
    return [{**row, "key": str(row["key"]) if row["key"] is not None else None,
             "cost_usd": float(row["cost_usd"]),
             "latency_p50_ms": round(row["latency_p50_ms"], 1), "latency_p99_ms": round(row["latency_p99_ms"], 1)}
            for row in rows]


def elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 2)


class Meter:
    """Measures one request and records it when its answer is complete."""

    def __init__(self, recorder: UsageRecorder, request, *, principal: str, surface: str, path: str,
                 model: str) -> None:
        self.recorder, self.request = recorder, request
        self.principal, self.surface, self.path, self.model = principal, surface, path, model
        self.started = time.monotonic()
        self.at = datetime.now(UTC)

    def done(self, status: int, *, backend: str | None = None, upstream_model: str | None = None,
             content: bytes | None = None, first_byte: float | None = None) -> None:
        tokens = (None, None)
        if content is not None and status < 400:
            try:
                tokens = tokens_of(orjson.loads(content))
            except orjson.JSONDecodeError:
                tokens = tokens_in_tail(content)
        self.recorder.record(Record(
            at=self.at, principal=self.principal, surface=self.surface, path=self.path, model=self.model,
            backend=backend, upstream_model=upstream_model, status=status, tokens_in=tokens[0], tokens_out=tokens[1],
            latency_ms=elapsed_ms(self.started),
            first_byte_ms=round((first_byte - self.started) * 1000, 2) if first_byte is not None else None))

    async def stream(self, chunks, status: int, *, backend: str, upstream_model: str):
        """Passes `chunks` on, keeping the first byte's time and the tail for the token counts."""
        tail, first = b"", None
        try:
            async for chunk in chunks:
                if first is None:
                    first = time.monotonic()
                tail = (tail + chunk)[-16384:]
                yield chunk
        finally:
            in_tokens, out_tokens = tokens_in_tail(tail)
            taken = getattr(self.request.state, "gateway_usage_tokens", None)  # a usage chunk taken out
            if taken:
                in_tokens, out_tokens = tokens_of({"usage": taken})
            failed = b'"error"' in tail[-2048:] and in_tokens is None
            self.recorder.record(Record(
                at=self.at, principal=self.principal, surface=self.surface, path=self.path, model=self.model,
                backend=backend, upstream_model=upstream_model, status=599 if failed else status,
                tokens_in=in_tokens, tokens_out=out_tokens, latency_ms=elapsed_ms(self.started),
                first_byte_ms=round((first - self.started) * 1000, 2) if first is not None else None))

    def finish(self, response):
        """Records `response` (a Response, now; a StreamingResponse, when its body ends)."""
        attempt = getattr(self.request.state, "gateway_attempt", None)
        backend = attempt.state.name if attempt is not None else None
        upstream = attempt.upstream_model if attempt is not None else None
        if isinstance(response, StreamingResponse):
            response.body_iterator = self.stream(response.body_iterator, response.status_code, backend=backend,
                                                 upstream_model=upstream)
        else:
            self.done(response.status_code, backend=backend, upstream_model=upstream, content=bytes(response.body))
        return response


async def metering(request, surface: str, path: str, model: str) -> Meter:
    """A Meter for this request (its principal is already known: the route checked its scope)."""
    principal = actor_name(await current_principal(request))
    return Meter(request.app.state.gateway_usage, request, principal=principal, surface=surface, path=path,
                 model=model)
