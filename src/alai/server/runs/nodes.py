"""The registry of data-plane nodes and cloud workers: who may claim runs, with
which capabilities, and whether they are online (a recent heartbeat)."""

from __future__ import annotations

import re
from typing import Any

from psycopg import AsyncConnection

from alai.server.problems import ProblemError
from alai.wire.runs import NODE_NAME_PATTERN, Node, NodeRegister, model_capability

_NAME = re.compile(NODE_NAME_PATTERN)
_CAPABILITY = re.compile(r"^[a-z]+:[\x21-\x7e]{1,300}$")
NODE_COLUMNS = ("n.name, n.kind, n.principal, n.capabilities, n.max_concurrency, n.version, n.hostname, "
                "n.registered_at, n.last_heartbeat_at, "
                "n.last_heartbeat_at > now() - make_interval(secs => %(offline)s) AS online")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ProblemError(422, f"{name!r} is not a node name: letters, digits, '.', '_' and '-', at most 64",
                           slug="bad-node-name")
    return name


def check_capabilities(capabilities: list[str]) -> list[str]:
    bad = [value for value in capabilities if not _CAPABILITY.match(value)]
    if bad:
        raise ProblemError(422, f"{bad[0]!r} is not a capability (kind:value, e.g. model:qwen3.5:27b)",
                           slug="bad-capability")
    # Models as runs name them: `bge-m3` and `bge-m3:latest` are one model.
    return sorted({model_capability(value[6:]) if value.startswith("model:") else value for value in capabilities})


def _node(row: dict[str, Any], running: list[int]) -> Node:
    models = [value.removeprefix("model:") for value in row["capabilities"] if value.startswith("model:")]
    return Node(name=row["name"], kind=row["kind"], principal=row["principal"], capabilities=row["capabilities"],
                models=models, max_concurrency=row["max_concurrency"], online=row["online"],
                last_heartbeat_at=row["last_heartbeat_at"], registered_at=row["registered_at"],
                version=row["version"], hostname=row["hostname"], running=running)


async def register(conn: AsyncConnection, *, name: str, principal: str, body: NodeRegister,
                   offline_seconds: float, may_take_over: bool) -> Node:
    """Registers a node or updates it. A name belongs to the principal that registered
    it first: another token may not pose as that node (unless an admin's)."""
    check_name(name)
    capabilities = check_capabilities(body.capabilities)
    row = await (await conn.execute(
        "INSERT INTO node_registry AS n (name, kind, principal, capabilities, max_concurrency, version, hostname) "
        "VALUES (%(name)s, %(kind)s, %(principal)s, %(caps)s, %(max)s, %(version)s, %(hostname)s) "
        "ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, capabilities = excluded.capabilities, "
        "max_concurrency = excluded.max_concurrency, version = excluded.version, hostname = excluded.hostname, "
        "principal = CASE WHEN %(take_over)s THEN excluded.principal ELSE n.principal END, "
        "last_heartbeat_at = now() "
        "WHERE n.principal = excluded.principal OR %(take_over)s "
        f"RETURNING {NODE_COLUMNS}",
        {"name": name, "kind": body.kind, "principal": principal, "caps": capabilities, "max": body.max_concurrency,
         "version": body.version, "hostname": body.hostname, "take_over": may_take_over,
         "offline": offline_seconds})).fetchone()
    if row is None:
        raise ProblemError(409, f"the node name {name!r} is registered by another identity; pick another "
                                "name (alai node start --name …) or use that node's token", slug="node-name-taken")
    return _node(row, [])


async def touch(conn: AsyncConnection, *, name: str, principal: str, capabilities: list[str] | None) -> None:
    """Records a heartbeat (and new capabilities); 404 when the node must register (again)."""
    if capabilities is not None:
        capabilities = check_capabilities(capabilities)
    result = await conn.execute(
        "UPDATE node_registry SET last_heartbeat_at = now(), capabilities = coalesce(%s, capabilities) "
        "WHERE name = %s AND principal = %s", (capabilities, name, principal))
    if result.rowcount == 0:
        raise ProblemError(404, f"node {name!r} is not registered under this identity; register it first",
                           slug="unknown-node")


async def capabilities_of(conn: AsyncConnection, *, name: str, principal: str) -> list[str]:
    row = await (await conn.execute("SELECT capabilities FROM node_registry WHERE name = %s AND principal = %s",
                                    (name, principal))).fetchone()
    if row is None:
        raise ProblemError(404, f"node {name!r} is not registered under this identity; register it first",
                           slug="unknown-node")
    return row["capabilities"]


async def list_nodes(conn: AsyncConnection, *, offline_seconds: float) -> list[Node]:
    rows = await (await conn.execute(
        f"SELECT {NODE_COLUMNS}, coalesce((SELECT array_agg(r.id ORDER BY r.id) FROM runs r "
        "WHERE r.state = 'running' AND r.node = n.name), '{}') AS running "
        "FROM node_registry n ORDER BY n.name", {"offline": offline_seconds})).fetchall()
    return [_node(row, row["running"]) for row in rows]


WAITING_REASON = """
CASE WHEN EXISTS (SELECT 1 FROM node_registry n WHERE n.capabilities @> {requires}
                  AND n.last_heartbeat_at > now() - make_interval(secs => {offline}))
     THEN NULL
     ELSE 'no online worker offers ' || array_to_string({requires}, ', ') || coalesce(' (offline: ' || (
            SELECT string_agg(n.name || ', last seen ' || to_char(n.last_heartbeat_at AT TIME ZONE 'UTC',
                                                                 'YYYY-MM-DD HH24:MI:SS') || ' UTC', '; ')
            FROM node_registry n WHERE n.capabilities @> {requires}) || ')', '')
END"""


def waiting_reason_sql(requires: str, offline: str) -> str:
    """An SQL expression: NULL when an online worker offers every capability in
    `requires`, else why the run waits (naming the offline nodes that could take it)."""
    return WAITING_REASON.format(requires=requires, offline=offline)
