"""Readiness, the status report and the replica heartbeat (SQL lives here)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from psycopg import AsyncConnection

from alai.server.db import migrations
from alai.wire.ops import DatabaseStatus, InstanceInfo, MigrationState


async def database_status(
    conn: AsyncConnection, *, known: list[migrations.Migration], embedded: bool
) -> DatabaseStatus:
    started = time.perf_counter()
    row = await (await conn.execute("SELECT current_setting('server_version') AS version")).fetchone()
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    plan = migrations.compare(known, await migrations.applied_async(conn))
    state = MigrationState(
        applied=len(plan.applied),
        pending=[m.key for m in plan.pending],
        unknown=plan.unknown,
        changed=plan.changed,
    )
    problems = readiness_reasons(state)
    return DatabaseStatus(
        state="degraded" if problems else "ok",
        detail="; ".join(problems) or None,
        server_version=row["version"] if row else None,
        embedded=embedded,
        latency_ms=latency_ms,
        migrations=state,
    )


def readiness_reasons(state: MigrationState) -> list[str]:
    reasons = []
    if state.pending:
        reasons.append(
            f"{len(state.pending)} migration(s) pending ({', '.join(state.pending[:3])}"
            f"{' …' if len(state.pending) > 3 else ''}): run `alai admin migrate`"
        )
    if state.changed:
        reasons.append(f"applied migration(s) were edited since: {', '.join(state.changed)}")
    return reasons


async def record_instance(
    conn: AsyncConnection, *, instance_id: str, hostname: str, pid: int, version: str,
    modules: list[str], started_at: datetime,
) -> None:
    await conn.execute(
        """
        INSERT INTO ops_instances (id, hostname, pid, version, modules, started_at, last_seen_at)
        VALUES (%s, %s, %s, %s, %s, %s, now())
        ON CONFLICT (id) DO UPDATE SET last_seen_at = now(), modules = EXCLUDED.modules
        """,
        (instance_id, hostname, pid, version, modules, started_at),
    )


async def forget_instance(conn: AsyncConnection, *, instance_id: str) -> None:
    await conn.execute("DELETE FROM ops_instances WHERE id = %s", (instance_id,))


async def prune_instances(conn: AsyncConnection, *, older_than: timedelta) -> int:
    cursor = await conn.execute(
        "DELETE FROM ops_instances WHERE last_seen_at < now() - %s", (older_than,)
    )
    return cursor.rowcount


async def live_instances(conn: AsyncConnection, *, seen_within: timedelta) -> list[InstanceInfo]:
    cursor = await conn.execute(
        """
        SELECT id, hostname, pid, version, modules, started_at, last_seen_at
        FROM ops_instances WHERE last_seen_at >= now() - %s ORDER BY started_at
        """,
        (seen_within,),
    )
    return [InstanceInfo(**row) for row in await cursor.fetchall()]


def utcnow() -> datetime:
    return datetime.now(UTC)
