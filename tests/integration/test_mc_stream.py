"""The change log never shows a later event before an earlier one that commits late."""

import psycopg
from psycopg.rows import dict_row

from alai.server.mc import stream


async def test_out_of_order_commits_are_delivered_in_order_without_gaps(app, client, database_url):
    async with app.state.pool.connection() as conn:
        start = await stream.current_position(conn)
    slow = psycopg.connect(database_url, row_factory=dict_row)
    try:
        slow.execute("INSERT INTO mc_events (task_id, kind, actor, payload) VALUES ('MC-x', 'updated', 'slow', '{}')")
        early_id = slow.execute("SELECT max(id) AS id FROM mc_events").fetchone()["id"]
        fast = await client.post("/v1/mc/tasks", json={"title": "commits first"})  # a later id, committed now
        assert fast.status_code == 201
        async with app.state.pool.connection() as conn:
            held_back = await stream.visible_events(conn, after=start)
        assert held_back == []  # the later event waits for the earlier, still-open one
        slow.commit()
        async with app.state.pool.connection() as conn:
            delivered = await stream.visible_events(conn, after=start)
    finally:
        slow.close()
    ids = [event.id for event in delivered]
    assert ids[0] == early_id and len(ids) == 2
    positions = [stream.position_of(event) for event in delivered]
    assert positions == sorted(positions)
    assert delivered[1].kind == "created" and delivered[1].task.title == "commits first"


async def test_positions_sort_by_transaction_number_not_by_its_text(app, database_url):
    """xids 9 and 10 sort 10 < 9 as text: the order must be numeric (a bug that showed
    only when transaction ids crossed 999 → 1000 under the two-replica test)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO mc_events (tx, task_id, kind, actor, payload) "
                     "VALUES ('10'::xid8, 'MC-ten', 'updated', 't', '{}'), ('9'::xid8, 'MC-nine', 'updated', 't', '{}')")
    async with app.state.pool.connection() as conn:
        first = await stream.visible_events(conn, after=stream.START, limit=2)
        assert [e.task_id for e in first] == ["MC-nine", "MC-ten"]
        resumed = await stream.visible_events(conn, after=stream.position_of(first[0]), limit=1)
        assert [e.task_id for e in resumed] == ["MC-ten"]
        now = await stream.current_position(conn)
    assert now[0] >= 10 and now != (10, first[1].id)  # the newest event, by number
