"""A replica's LISTEN connection that is cut (a database restart, a failover, an idle
timeout) is opened again and listens again; wake-ups reach it as before."""

import asyncio

import psycopg

from alai.server.runs import service as runs
from tests.support.waiting import wait_for


def listeners(database_url: str, channel: str) -> list[int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return [pid for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
            (f"LISTEN {channel}",))]


async def test_the_runs_listener_listens_again_after_its_connection_is_cut(app, database_url):
    wakeup = app.state.runs_wakeup

    async def listening():
        return listeners(database_url, runs.NOTIFY_CHANNEL) or None
    before = await wait_for(listening)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for pid in before:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    async def listening_anew():
        now = listeners(database_url, runs.NOTIFY_CHANNEL)
        return now if now and not set(now) & set(before) else None
    await wait_for(listening_anew, timeout=10)
    await asyncio.sleep(0.5)  # its own wake-up on listening again ("what came meanwhile") is past

    seen = wakeup.generation
    await asyncio.sleep(0.5)
    assert wakeup.generation == seen  # idle: nothing moves it but a notification
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"NOTIFY {runs.NOTIFY_CHANNEL}")  # as another replica's commit would

    async def woken():
        return wakeup.generation > seen or None
    await wait_for(woken, timeout=2)  # by the notification: nothing else bumps it here
