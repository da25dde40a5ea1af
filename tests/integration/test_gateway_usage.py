"""Usage records: batches written off the request path; a record the database refuses is
dropped alone; records survive a database that is away."""

from datetime import UTC, datetime

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from alai.server.gateway.config import GatewayConfig
from alai.server.gateway.usage import Record, UsageRecorder, summary


def record(model: str, tokens: int = 1) -> Record:
    return Record(at=datetime.now(UTC), principal="me", surface="ollama", path="/api/chat", model=model,
                  backend="anvil", upstream_model=model, status=200, tokens_in=tokens, tokens_out=tokens,
                  latency_ms=1.0, first_byte_ms=None)


async def test_a_refused_record_is_dropped_alone_and_the_rest_written(database_url):
    async with AsyncConnectionPool(database_url, kwargs={"autocommit": True, "row_factory": dict_row},
                                   open=False) as pool:
        recorder = UsageRecorder(pool, GatewayConfig())
        for model in ("good-1", "bad\x00model", "good-2"):
            recorder.record(record(model))
        assert await recorder.flush() == 3
        async with pool.connection() as conn:
            rows = await summary(conn, since=datetime(2000, 1, 1, tzinfo=UTC), by="model", principal="me")
        assert sorted(row["key"] for row in rows) == ["good-1", "good-2"]
        assert await recorder.flush() == 0  # nothing left behind to fail again


async def test_records_wait_while_the_database_is_away(database_url):
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE gateway_usage")
    away = AsyncConnectionPool("postgresql://nobody@127.0.0.1:9/none", open=False, timeout=1)
    recorder = UsageRecorder(away, GatewayConfig())
    recorder.record(record("kept"))
    try:
        await recorder.flush()
    except Exception:
        pass
    assert len(recorder._queue) == 1  # still there for the next flush
    async with AsyncConnectionPool(database_url, kwargs={"autocommit": True}, open=False) as pool:
        recorder.pool = pool
        assert await recorder.flush() == 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT model FROM gateway_usage").fetchall() == [("kept",)]
