"""Runs: the durable queue on PostgreSQL, leases, guarded worker writes, events.

- A run is `queued` when an online worker offers what it requires, `waiting` (with
  the reason) when none does; both are claimable, so a node coming back takes its
  runs at once. The sweeper flips the two as nodes come and go.
- A claim (`FOR UPDATE SKIP LOCKED`) makes the run `running`, increments `attempt`
  and gives it a lease that the worker's heartbeat renews. Every worker write names
  (run, attempt) and is refused (409) unless that attempt is still the current one
  on that worker: a zombie attempt can never overwrite the attempt that replaced it.
- An expired lease puts the run back in the queue (next attempt) until
  `max_attempts` attempts were lost or failed; a graceful give-back (release) does
  not count.
- Every state change is a `state` event in run_events (the stream's rows) and a
  NOTIFY that wakes claimers and followers; events are read in (tx, id) order
  below the xmin horizon (see alai/server/streams.py), so a follower never skips one.

Functions take `conn` keyword-only and never commit; the callers hold the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from alai.server import cursors, streams
from alai.server.problems import ProblemError
from alai.server.runs import agents, nodes
from alai.wire.problem import FieldError
from alai.wire.runs import (
    DEFAULT_TIMEOUT_SECONDS,
    FINAL_STATES,
    INPUT_MAX_BYTES,
    Agent,
    Claim,
    Completion,
    CompletionItem,
    EventIn,
    Run,
    RunCreate,
    RunEvent,
    RunEventPage,
    RunHeld,
    RunPage,
    RunResult,
    model_capability,
)

NOTIFY_CHANNEL = "alai_runs"
DEFAULT_MAX_ATTEMPTS = 3
RUN_COLUMNS = ("id, agent, agent_version, model, executor, requires, task_id, state, reason, priority, "
               "timeout_seconds, max_attempts, attempt, node, cancel_requested, lease_expires_at, created_by, "
               "created_at, started_at, finished_at, updated_at")
EVENT_COLUMNS = "id, tx::text AS tx, run_id, attempt, kind, data, created_at"


@dataclass(frozen=True)
class Limits:
    lease_seconds: float
    offline_seconds: float
    default_model: str | None = None


def _run(row: dict[str, Any]) -> Run:
    return Run.model_validate({key: row[key] for key in Run.model_fields if key in row})


def _event(row: dict[str, Any]) -> RunEvent:
    return RunEvent(id=row["id"], position=f"{row['tx']}-{row['id']}", run_id=row["run_id"], attempt=row["attempt"],
                    kind=row["kind"], data=row["data"], at=row["created_at"])


async def _notify(conn: AsyncConnection) -> None:
    # Sent at commit, folded with others of the same transaction: one wake-up per commit.
    await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")


async def add_state_event(conn: AsyncConnection, *, run: Run, data: dict[str, Any] | None = None) -> None:
    payload = {"state": run.state, "attempt": run.attempt, "reason": run.reason, "node": run.node}
    payload.update(data or {})
    await conn.execute("INSERT INTO run_events (run_id, attempt, kind, data) VALUES (%s, %s, 'state', %s)",
                       (run.id, run.attempt, Jsonb(payload)))


# -- people's side --------------------------------------------------------------------------

def _requires(agent: Agent, model: str | None) -> list[str]:
    if agent.executor == "command":
        return ["executor:command", f"command:{agent.command}"]
    return [model_capability(model)] if model else []


async def create(conn: AsyncConnection, *, body: RunCreate, actor: str, limits: Limits,
                 task_exists: Any = None, agents_seen: dict[str, Agent] | None = None) -> Run:
    """Stores a new run (queued or waiting) and its first event, in one statement (so in
    autocommit mode, or in the caller's transaction).

    `agents_seen` (the replica's, name → the version last read) saves reading the agent
    for every run: a version never changes, and the insert happens only if the version
    used is still the agent's current one (checked in the same statement); if not — a
    new version, or deleted — the agent is read again and the insert tried again."""
    if len(body.input.encode()) > INPUT_MAX_BYTES:
        raise ProblemError(413, f"a run's input may hold at most {INPUT_MAX_BYTES // 1024} KiB",
                           slug="payload-too-large")
    name = agents.check_name(body.agent)
    agent = agents_seen.get(name) if agents_seen is not None else None
    for _ in range(3):
        if agent is None:
            try:
                agent = await agents.get(conn, name=name)
            except ProblemError as error:
                raise ProblemError(422, error.detail, slug="unknown-agent",
                                   errors=[FieldError(field="body.agent", message="unknown agent")]) from None
            if agents_seen is not None:
                agents_seen[name] = agent
        row = await _insert(conn, agent=agent, body=body, actor=actor, limits=limits, task_exists=task_exists)
        if row is not None:
            return _run(row)
        agent = None  # not its current version any more: read it again
        if agents_seen is not None:
            agents_seen.pop(name, None)
    raise ProblemError(409, f"agent {name!r} kept changing while the run was created; try again",
                       slug="agent-changed")


async def _insert(conn: AsyncConnection, *, agent: Agent, body: RunCreate, actor: str, limits: Limits,
                  task_exists: Any) -> dict[str, Any] | None:
    """The run row, or None if `agent` is no longer the current version of its agent."""
    model = body.model or (agent.model if agent.model not in (None, "inherit") else None) or limits.default_model
    if agent.executor == "llm" and model is None:
        raise ProblemError(422, f"agent {agent.name!r} names no model and the server has no default; pass one "
                                "(--model) or set ALAI_RUNS_DEFAULT_MODEL", slug="no-model",
                           errors=[FieldError(field="body.model", message="required for this agent")])
    if body.task_id is not None and task_exists is not None and not await task_exists(conn, body.task_id):
        raise ProblemError(422, f"there is no Mission Control task {body.task_id!r}", slug="unknown-task",
                           errors=[FieldError(field="body.task_id", message="unknown task")])
    requires = _requires(agent, model)
    reason_sql = nodes.waiting_reason_sql("%(requires)b::text[]", "%(offline)s")
    # The run, its first state event (as add_state_event writes it) and the wake-up
    # (pg_notify, sent at commit like NOTIFY) in one statement: without a transaction
    # around it (routes.create_run), a create is one round trip and its own commit.
    return await (await conn.execute(
        "WITH run AS (INSERT INTO runs (agent, agent_version, model, executor, requires, input, task_id, state, "
        "reason, priority, timeout_seconds, max_attempts, created_by) "
        f"SELECT %(agent)s, %(version)s, %(model)s, %(executor)s, %(requires)b, %(input)s, %(task)s, "
        f"CASE WHEN reason IS NULL THEN 'queued' ELSE 'waiting' END, reason, %(priority)s, %(timeout)s, "
        f"%(attempts)s, %(actor)s FROM (SELECT {reason_sql} AS reason) why "
        "WHERE EXISTS (SELECT 1 FROM run_agents WHERE name = %(agent)s AND version = %(version)s "
        "AND deleted_at IS NULL) "
        f"RETURNING {RUN_COLUMNS}), "
        "event AS (INSERT INTO run_events (run_id, attempt, kind, data) SELECT id, attempt, 'state', "
        "jsonb_build_object('state', state, 'attempt', attempt, 'reason', reason, 'node', node) FROM run) "
        f"SELECT run.* FROM run, (SELECT pg_notify('{NOTIFY_CHANNEL}', '')) AS wake",
        {"agent": agent.name, "version": agent.version, "model": model if agent.executor == "llm" else None,
         "executor": agent.executor, "requires": requires, "input": body.input, "task": body.task_id,
         "priority": body.priority, "timeout": body.timeout_seconds or agent.timeout_seconds
         or DEFAULT_TIMEOUT_SECONDS, "attempts": body.max_attempts or agent.max_attempts or DEFAULT_MAX_ATTEMPTS,
         "actor": actor, "offline": limits.offline_seconds})).fetchone()


async def get(conn: AsyncConnection, *, run_id: int, for_update: bool = False) -> Run:
    row = await (await conn.execute(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s" + (" FOR UPDATE" if for_update else ""),
        (run_id,))).fetchone()
    if row is None:
        raise ProblemError(404, f"there is no run {run_id}", slug="unknown-run")
    return _run(row)


async def result(conn: AsyncConnection, *, run_id: int) -> RunResult:
    row = await (await conn.execute("SELECT id, state, output, error, usage, attempt FROM runs WHERE id = %s",
                                    (run_id,))).fetchone()
    if row is None:
        raise ProblemError(404, f"there is no run {run_id}", slug="unknown-run")
    if row["state"] not in FINAL_STATES:
        raise ProblemError(409, f"run {run_id} has not finished (it is {row['state']}); follow it with "
                                f"`alai agent logs {run_id} -f`", slug="run-not-finished")
    return RunResult(**row)




async def list_runs(conn: AsyncConnection, *, agent: str | None, states: list[str] | None, task_id: str | None,
                    node: str | None, limit: int, cursor: str | None) -> RunPage:
    where, params = [], []
    for column, value in (("agent", agent), ("task_id", task_id), ("node", node)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if states:
        where.append("state = ANY(%s)")
        params.append(states)
    if cursor is not None:
        where.append("id < %s")
        params.append(cursors.decode_id(cursor))
    sql = (f"SELECT {RUN_COLUMNS} FROM runs {'WHERE ' + ' AND '.join(where) if where else ''} "
           "ORDER BY id DESC LIMIT %s")
    rows = await (await conn.execute(sql, [*params, limit + 1])).fetchall()
    items = [_run(row) for row in rows[:limit]]
    return RunPage(items=items, next_cursor=cursors.encode_id(items[-1].id) if len(rows) > limit else None)


async def cancel(conn: AsyncConnection, *, run_id: int, actor: str) -> Run:
    """Queued or waiting: cancelled now. Running: its worker is told at its next
    heartbeat (and the sweeper ends it if that worker is gone). Call in a transaction."""
    run = await get(conn, run_id=run_id, for_update=True)
    if run.state in FINAL_STATES:
        raise ProblemError(409, f"run {run_id} has already finished ({run.state})", slug="run-finished")
    if run.state == "running":
        if not run.cancel_requested:
            row = await (await conn.execute(
                f"UPDATE runs SET cancel_requested = true, updated_at = now() WHERE id = %s RETURNING {RUN_COLUMNS}",
                (run_id,))).fetchone()
            run = _run(row)
            await add_state_event(conn, run=run, data={"cancel_requested": True, "by": actor})
            await _notify(conn)
        return run
    row = await (await conn.execute(
        f"UPDATE runs SET state = 'cancelled', reason = %s, cancel_requested = true, finished_at = now(), "
        f"updated_at = now() WHERE id = %s RETURNING {RUN_COLUMNS}", (f"cancelled by {actor}", run_id))).fetchone()
    run = _run(row)
    await add_state_event(conn, run=run)
    await _notify(conn)
    return run


async def events(conn: AsyncConnection, *, run_id: int, after: streams.Position, limit: int) -> RunEventPage:
    """Final events of a run after a position, oldest first (see streams.py on "final")."""
    await get(conn, run_id=run_id)
    items = await final_events(conn, run_id=run_id, after=after, limit=limit)
    return RunEventPage(items=items, next_after=items[-1].position if len(items) == limit else None)


async def event_position(conn: AsyncConnection, *, run_id: int, value: str | None) -> streams.Position:
    """A resume point: "<tx>-<id>", an event id, or nothing (the start of the run)."""
    if value is None or value.strip() in ("", "0"):
        return streams.START
    text = value.strip()
    try:
        if "-" in text:
            return streams.parse_position_text(text)
        event_id = int(text)
    except ValueError:
        raise ProblemError(400, f"{value!r} is not an event position or id", slug="bad-resume-id") from None
    row = await (await conn.execute("SELECT tx::text AS tx FROM run_events WHERE id = %s AND run_id = %s",
                                    (event_id, run_id))).fetchone()
    if row is None:
        raise ProblemError(400, f"run {run_id} has no event {event_id}", slug="bad-resume-id")
    return int(row["tx"]), event_id


# -- workers' side --------------------------------------------------------------------------

CLAIM = f"""
WITH picked AS (
    SELECT id FROM runs
    WHERE state IN ('queued', 'waiting') AND requires <@ %(caps)b::text[]
    ORDER BY priority DESC, id
    LIMIT %(capacity)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE runs r SET state = 'running', reason = NULL, attempt = r.attempt + 1, node = %(node)s,
        lease_expires_at = now() + make_interval(secs => %(lease)s),
        deadline = now() + make_interval(secs => r.timeout_seconds),
        started_at = coalesce(r.started_at, now()), updated_at = now()
    FROM picked WHERE r.id = picked.id
    RETURNING r.*
), logged AS (
    INSERT INTO run_events (run_id, attempt, kind, data)
    SELECT id, attempt, 'state', jsonb_build_object('state', 'running', 'attempt', attempt, 'node', node,
                                                    'reason', NULL)
    FROM claimed
)
SELECT {', '.join('c.' + column for column in RUN_COLUMNS.split(', '))}, c.input, c.deadline,
       v.definition, v.front_matter, v.system_prompt, v.created_at AS agent_updated_at,
       v.created_by AS agent_updated_by, pg_notify('{NOTIFY_CHANNEL}', '') IS NULL AS woken
FROM claimed c JOIN run_agent_versions v ON v.name = c.agent AND v.version = c.agent_version
ORDER BY c.priority DESC, c.id
"""


async def claim(conn: AsyncConnection, *, node: str, capabilities: list[str], capacity: int,
                limits: Limits) -> list[Claim]:
    """Up to `capacity` runs this node can execute, now running on it, their state events
    written and followers woken (pg_notify per row, folded into one at commit): in
    autocommit mode one statement and one commit."""
    rows = await (await conn.execute(CLAIM, {"caps": capabilities, "capacity": capacity, "node": node,
                                             "lease": limits.lease_seconds})).fetchall()
    claims = []
    for row in rows:
        agent = agents.describe(row["agent"], row["agent_version"], row["definition"], row["front_matter"],
                                row["system_prompt"], row["agent_updated_at"], row["agent_updated_by"])
        claims.append(Claim(run=_run(row), agent=agent, input=row["input"], deadline=row["deadline"],
                            lease_seconds=limits.lease_seconds))
    return claims


RENEW = """
UPDATE runs SET lease_expires_at = now() + make_interval(secs => %(lease)s)
FROM unnest(%(ids)b::bigint[], %(attempts)b::integer[]) AS held(id, attempt)
WHERE runs.id = held.id AND runs.attempt = held.attempt AND runs.state = 'running' AND runs.node = %(node)s
RETURNING runs.id, runs.attempt, runs.cancel_requested, runs.deadline < now() AS overdue
"""


async def renew(conn: AsyncConnection, *, node: str, held: list[RunHeld],
                limits: Limits) -> tuple[list[RunHeld], list[RunHeld]]:
    """Renews the leases of the runs a worker holds: (to stop, lost)."""
    if not held:
        return [], []
    rows = await (await conn.execute(RENEW, {"lease": limits.lease_seconds, "ids": [h.run_id for h in held],
                                             "attempts": [h.attempt for h in held], "node": node})).fetchall()
    renewed = {(row["id"], row["attempt"]) for row in rows}
    stop = [RunHeld(run_id=row["id"], attempt=row["attempt"]) for row in rows
            if row["cancel_requested"] or row["overdue"]]
    lost = [h for h in held if (h.run_id, h.attempt) not in renewed]
    return stop, lost


def _check_current(run: Run, *, attempt: int, node: str) -> None:
    """409 unless `attempt` is the run's current attempt on `node`."""
    if run.attempt != attempt or run.node != node or run.state != "running":
        now = (f"it is {run.state}" + (f", attempt {run.attempt}" if run.attempt else "")
               + (f" on {run.node}" if run.node and run.state == "running" else ""))
        raise ProblemError(409, f"attempt {attempt} of run {run.id} is no longer current ({now}); "
                                "its writes are refused", slug="attempt-superseded",
                           current_attempt=run.attempt, state=run.state)


async def _current_attempt(conn: AsyncConnection, *, run_id: int, attempt: int, node: str) -> Run:
    """The run, locked, if `attempt` is its current attempt on `node`; else 409."""
    run = await get(conn, run_id=run_id, for_update=True)
    _check_current(run, attempt=attempt, node=node)
    return run


async def add_events(conn: AsyncConnection, *, run_id: int, attempt: int, node: str, items: list[EventIn]) -> None:
    """Stores a worker's events (a retried post is stored once). Call in a transaction."""
    await _current_attempt(conn, run_id=run_id, attempt=attempt, node=node)
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO run_events (run_id, attempt, seq, kind, data) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (run_id, attempt, seq) WHERE seq IS NOT NULL DO NOTHING",
            [(run_id, attempt, item.seq, item.kind, Jsonb(item.data)) for item in items])
    await _notify(conn)


# Arrays go in binary (%b) in the runner's busy statements: psycopg escapes a text
# array's elements one by one in Python (hive.service.publish_groups says more).
LOCK_RUNS = f"SELECT {RUN_COLUMNS}, returned FROM runs WHERE id = ANY(%b::bigint[]) ORDER BY id FOR UPDATE"

# Every decided end of an attempt in one statement: the runs' rows, their state events
# (as add_state_event writes them, in run-id order) and the wake-up (pg_notify, sent
# at commit). `retry`: the attempt failed with attempts left, so the run is queued
# again and keeps its earlier output; else it is final.
END_ATTEMPTS = f"""
WITH ended AS (
    SELECT * FROM unnest(%(ids)b::bigint[], %(states)b::text[], %(reasons)b::text[], %(outputs)b::text[],
                         %(errors)b::text[], %(usages)b::jsonb[], %(retries)b::boolean[])
        AS e(id, state, reason, output, error, usage, retry)
), updated AS (
    UPDATE runs r SET state = e.state, reason = e.reason, error = e.error, lease_expires_at = NULL,
        node = CASE WHEN e.retry THEN NULL ELSE r.node END,
        deadline = CASE WHEN e.retry THEN NULL ELSE r.deadline END,
        output = CASE WHEN e.retry THEN r.output ELSE e.output END,
        usage = CASE WHEN e.retry THEN r.usage ELSE e.usage END,
        finished_at = CASE WHEN e.retry THEN r.finished_at ELSE now() END,
        updated_at = now()
    FROM ended e WHERE r.id = e.id
    RETURNING {', '.join('r.' + column for column in RUN_COLUMNS.split(', '))}, r.error
), logged AS (
    INSERT INTO run_events (run_id, attempt, kind, data)
    SELECT id, attempt, 'state', jsonb_build_object('state', state, 'attempt', attempt, 'reason', reason,
                                                    'node', node)
        || CASE WHEN coalesce(error, '') = '' THEN '{{}}'::jsonb ELSE jsonb_build_object('error', error) END
    FROM updated ORDER BY id
)
SELECT updated.*, pg_notify('{NOTIFY_CHANNEL}', '') IS NULL AS woken FROM updated
"""


@dataclass
class Ended:
    """What complete_many did: an answer per item (the run, or the problem), in the
    items' order, and the runs it changed (not the repeats of completions that landed)."""

    answers: list[tuple[Run | None, ProblemError | None]]
    changed: list[Run]


async def complete(conn: AsyncConnection, *, run_id: int, attempt: int, node: str, body: Completion) -> Ended:
    """Ends an attempt (see complete_many); raises the problem (404, 409) if refused."""
    # Not validated again: the path's numbers may be out of an item's range (attempt 0),
    # which complete_many answers as it answers an unknown run or a stale attempt.
    item = CompletionItem.model_construct(run_id=run_id, attempt=attempt, **dict(body))
    ended = await complete_many(conn, node=node, items=[item])
    error = ended.answers[0][1]
    if error is not None:
        raise error
    return ended


async def complete_many(conn: AsyncConnection, *, node: str, items: list[CompletionItem]) -> Ended:
    """Ends attempts: succeeded, cancelled, timed out, or failed — queued again while
    attempts remain (the ones given back not counted) and no cancel was asked. A
    repeated completion of the same attempt answers as the first did and changes
    nothing; an attempt that is not current is refused (409) and an unknown run (404),
    writing nothing and leaving the other items alone. Two statements whatever the
    number of items: the runs locked in id order (two batches cannot deadlock), then
    every write (END_ATTEMPTS). Call in a transaction."""
    ids = sorted({item.run_id for item in items if 0 < item.run_id < 2**63})  # others are no run's
    rows = await (await conn.execute(LOCK_RUNS, (ids,))).fetchall()
    current = {row["id"]: (_run(row), row["returned"]) for row in rows}
    answers: list[tuple[Run | None, ProblemError | None]] = [(None, None)] * len(items)
    decided: dict[int, tuple[Run, int, tuple]] = {}  # run id → (the run as ended, its item, the write)
    landed: dict[int, int] = {}  # item index → run id, answered with the run once written
    for index in sorted(range(len(items)), key=lambda i: (items[i].run_id, items[i].attempt)):
        item = items[index]
        if item.run_id not in current:
            answers[index] = (None, ProblemError(404, f"there is no run {item.run_id}", slug="unknown-run"))
            continue
        returned = current[item.run_id][1]
        run = decided[item.run_id][0] if item.run_id in decided else current[item.run_id][0]
        if run.attempt == item.attempt and run.node == node and run.state == item.outcome:
            # A retry of a completion that landed (maybe earlier in this batch). A different
            # outcome is not one: the run ended otherwise (the sweeper timed it out), 409 below.
            landed[index] = run.id
            continue
        try:
            _check_current(run, attempt=item.attempt, node=node)
        except ProblemError as error:
            answers[index] = (None, error)
            continue
        retry = item.outcome == "failed" and item.attempt - returned < run.max_attempts and not run.cancel_requested
        if retry:
            state = "queued"
            reason = f"attempt {item.attempt} failed on {node}: {(item.error or 'no detail')[:300]}; retrying"
        else:
            state, reason = item.outcome, None if item.outcome == "succeeded" else (item.error or item.outcome)[:1000]
        decided[run.id] = (run.model_copy(update={"state": state, "node": None if retry else run.node}), index,
                           (run.id, state, reason, item.output, item.error,
                            Jsonb(item.usage) if item.usage is not None else None, retry))
    written: dict[int, Run] = {}
    if decided:
        columns = zip(*(write for _, _, write in decided.values()), strict=True)  # END_ATTEMPTS' arrays, in order
        params = dict(zip(("ids", "states", "reasons", "outputs", "errors", "usages", "retries"),
                          (list(column) for column in columns), strict=True))
        for row in await (await conn.execute(END_ATTEMPTS, params)).fetchall():
            written[row["id"]] = _run(row)
        for run_id, (_, index, _) in decided.items():
            answers[index] = (written[run_id], None)
    for index, run_id in landed.items():
        answers[index] = (written.get(run_id) or current[run_id][0], None)
    return Ended(answers=answers, changed=[written[run_id] for run_id in sorted(written)])


async def release(conn: AsyncConnection, *, run_id: int, attempt: int, node: str) -> Run:
    """A worker gives a run back (it is stopping): queued again, the attempt not counted."""
    await _current_attempt(conn, run_id=run_id, attempt=attempt, node=node)
    row = await (await conn.execute(
        "UPDATE runs SET state = 'queued', reason = %s, node = NULL, lease_expires_at = NULL, deadline = NULL, "
        f"returned = returned + 1, updated_at = now() WHERE id = %s RETURNING {RUN_COLUMNS}",
        (f"given back by {node} (stopping)", run_id))).fetchone()
    run = _run(row)
    await add_state_event(conn, run=run)
    await _notify(conn)
    return run


# -- the sweeper ------------------------------------------------------------------------------

EXPIRED = f"""
WITH lapsed AS (
    SELECT id FROM runs
    WHERE state = 'running' AND (lease_expires_at < now() OR deadline < now() - make_interval(secs => %(grace)s))
    ORDER BY id LIMIT 200 FOR UPDATE SKIP LOCKED
)
UPDATE runs r SET
    state = CASE WHEN r.cancel_requested THEN 'cancelled'
                 WHEN r.deadline < now() THEN 'timed_out'
                 WHEN r.attempt - r.returned >= r.max_attempts THEN 'failed'
                 ELSE 'queued' END,
    reason = CASE WHEN r.cancel_requested THEN 'cancelled; its worker ' || r.node || ' did not confirm'
                  WHEN r.deadline < now() THEN 'timed out after ' || r.timeout_seconds || ' s on ' || r.node
                  WHEN r.attempt - r.returned >= r.max_attempts
                      THEN 'attempt ' || r.attempt || ' lost (' || r.node || ' stopped renewing its lease); '
                           || 'no attempts left'
                  ELSE 'attempt ' || r.attempt || ' lost (' || r.node || ' stopped renewing its lease); requeued'
             END,
    node = CASE WHEN r.cancel_requested OR r.deadline < now() OR r.attempt - r.returned >= r.max_attempts
                THEN r.node END,
    finished_at = CASE WHEN r.cancel_requested OR r.deadline < now() OR r.attempt - r.returned >= r.max_attempts
                       THEN now() END,
    lease_expires_at = NULL, updated_at = now()
FROM lapsed WHERE r.id = lapsed.id
RETURNING {', '.join('r.' + column for column in RUN_COLUMNS.split(', '))}
"""

REEVALUATE = f"""
WITH judged AS (
    SELECT id, state, {nodes.waiting_reason_sql('runs.requires', '%(offline)s')} AS why
    FROM runs WHERE state IN ('queued', 'waiting')
), flipping AS (
    SELECT runs.id, judged.why FROM runs JOIN judged ON judged.id = runs.id
    WHERE (judged.why IS NULL) <> (judged.state = 'queued')
       OR (judged.state = 'waiting' AND judged.why IS DISTINCT FROM runs.reason)
    ORDER BY runs.id LIMIT 1000 FOR UPDATE OF runs SKIP LOCKED
)
UPDATE runs SET state = CASE WHEN flipping.why IS NULL THEN 'queued' ELSE 'waiting' END,
                reason = flipping.why, updated_at = now()
FROM flipping WHERE runs.id = flipping.id AND runs.state IN ('queued', 'waiting')
RETURNING {', '.join('runs.' + column for column in RUN_COLUMNS.split(', '))}
"""


async def sweep(conn: AsyncConnection, *, limits: Limits) -> list[Run]:
    """Expired leases, overdue runs whose worker did not stop them, and queued ↔ waiting
    as nodes come and go. Returns the runs whose state changed. Call in a transaction."""
    changed = []
    rows = await (await conn.execute(EXPIRED, {"grace": max(5.0, limits.lease_seconds / 2)})).fetchall()
    rows += await (await conn.execute(REEVALUATE, {"offline": limits.offline_seconds})).fetchall()
    for row in rows:
        run = _run(row)
        await add_state_event(conn, run=run)
        changed.append(run)
    if changed:
        await _notify(conn)
    return changed


async def final_events(conn: AsyncConnection, *, run_id: int, after: streams.Position,
                        limit: int = 500) -> list[RunEvent]:
    rows = await streams.final_rows(conn, table="run_events", columns=EVENT_COLUMNS, after=after, limit=limit,
                                    where="run_id = %s", params=(run_id,))
    return [_event(row) for row in rows]


def is_final_event(event: RunEvent) -> bool:
    return event.kind == "state" and event.data.get("state") in FINAL_STATES
