"""What a run's state changes mean elsewhere: the linked Mission Control task is
commented on and moved; every change is published on HiveMind (runs.<agent>).

The task changes go through Mission Control's service in a savepoint of the run's
own transaction: a task that was deleted or a status the workflow lacks never undoes
the run's state change; the problem is recorded as an `outcome` event instead. The
HiveMind messages are published after that transaction commits (publish_states).
"""

from __future__ import annotations

import orjson
import structlog
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from alai.server.problems import ProblemError
from alai.server.settings import Settings, comma_list
from alai.wire.runs import FINAL_STATES, Run

log = structlog.get_logger("alai.runs")
OUTPUT_IN_COMMENT = 20_000
ACTOR = "runner"


def _comment(run: Run, output: str | None) -> str | None:
    head = f"Run {run.id} ({run.agent} v{run.agent_version}"
    head += f", {run.model})" if run.model else ")"
    if run.state == "succeeded":
        text = (output or "").strip()
        if len(text) > OUTPUT_IN_COMMENT:
            text = text[:OUTPUT_IN_COMMENT] + f"\n\n… ({len(text) - OUTPUT_IN_COMMENT} more characters: " \
                                              f"`alai agent result {run.id}`)"
        return f"{head} succeeded:\n\n{text}" if text else f"{head} succeeded with no output."
    if run.state in ("failed", "timed_out"):
        return f"{head} {run.state.replace('_', ' ')}: {run.reason or 'no detail'}"
    if run.state == "cancelled":
        return f"{head} was cancelled: {run.reason or ''}".rstrip(": ")
    return None


def _target_status(run: Run, settings: Settings) -> str | None:
    if run.state == "running" and run.attempt == 1:
        return settings.runs_task_on_start or None
    if run.state == "succeeded":
        return settings.runs_task_on_success or None
    if run.state in ("failed", "timed_out"):
        return settings.runs_task_on_failure or None
    return None


async def _task_outcome(conn: AsyncConnection, run: Run, settings: Settings) -> None:
    from alai.server.mc import service as mc
    from alai.wire.mc import TaskPatch

    assert run.task_id is not None
    comment = None
    if run.state in ("succeeded", "failed", "timed_out", "cancelled"):
        row = await (await conn.execute("SELECT output FROM runs WHERE id = %s", (run.id,))).fetchone()
        comment = _comment(run, row["output"])
    status = _target_status(run, settings)
    if comment:
        await mc.add_comment(conn, task_id=run.task_id, body=comment, actor=ACTOR)
    if status:
        workflow = mc.Workflow(statuses=tuple(comma_list(settings.mc_statuses)),
                               closed=frozenset(comma_list(settings.mc_closed_statuses)))
        await mc.update_task(conn, task_id=run.task_id, patch=TaskPatch(status=status), actor=ACTOR,
                             workflow=workflow, if_match=None)


def _group(run: Run):
    """The run's state as a HiveMind message, encoded here (what hive.prepare would make
    of it: a small JSON object, far below the size limit) — one per state change."""
    from alai.server.hive import service as hive

    payload = orjson.dumps({"run_id": run.id, "agent": run.agent, "state": run.state, "attempt": run.attempt,
                            "node": run.node, "reason": run.reason, "task_id": run.task_id,
                            "at": run.updated_at.isoformat()}).decode()
    return hive.Group(f"runs.{run.agent}", ACTOR, [hive.Prepared("json", payload, str(run.id), "{}")])


async def publish_states(app, runs: list[Run]) -> None:
    """Publishes state changes on HiveMind after the runs' own commit, never inside it:
    inside, every run of an agent would wait on its topic's row (and runs of several
    agents could deadlock on theirs). Through this replica's group publisher when it
    serves HiveMind (batched, topics locked in name order), else in one statement.
    Best effort: the run's events are the record; a message lost to a crash between
    the two commits is not sent again."""
    groups = [_group(run) for run in runs]
    publisher = getattr(app.state, "hive_publisher", None)
    try:
        if publisher is not None:
            for group in groups:
                publisher.submit(group).add_done_callback(_consume)
            return
        from alai.server.hive import service as hive

        async with app.state.pool.connection() as conn:
            await hive.publish_groups(conn, groups)
    except Exception as error:
        log.warning("run states not published on HiveMind", runs=[run.id for run in runs], error=str(error))


def _consume(future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("run state not published on HiveMind", error=str(future.exception()))


async def apply(conn: AsyncConnection, runs: list[Run], settings: Settings) -> None:
    """Comments on and moves the tasks the runs are linked to (in the runs' transaction)."""
    for run in runs:
        if run.task_id is not None and (run.state in FINAL_STATES or _target_status(run, settings)):
            await _guarded(conn, run, "task", _task_outcome(conn, run, settings))


async def _guarded(conn: AsyncConnection, run: Run, what: str, work) -> bool:
    try:
        async with conn.transaction():  # a savepoint
            await work
        return True
    except Exception as error:  # never undo the run's own change
        detail = error.detail if isinstance(error, ProblemError) else str(error).splitlines()[0]
        log.warning("run outcome not applied", run=run.id, target=what, error=detail)
        await conn.execute("INSERT INTO run_events (run_id, attempt, kind, data) VALUES (%s, %s, 'outcome', %s)",
                           (run.id, run.attempt, Jsonb({"target": what, "applied": False, "error": detail})))
        return False
