"""What a run's state changes mean elsewhere: the linked Mission Control task is
commented on and moved; every change is published on HiveMind (runs.<agent>).

Both go through the other modules' services, in a savepoint of the run's own
transaction: a task that was deleted or a status the workflow lacks never undoes
the run's state change; the problem is recorded as an `outcome` event instead.
"""

from __future__ import annotations

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


async def _publish(conn: AsyncConnection, run: Run) -> None:
    from alai.server.hive import service as hive
    from alai.wire.hive import MessageIn

    message = MessageIn.model_validate({"json": {
        "run_id": run.id, "agent": run.agent, "state": run.state, "attempt": run.attempt, "node": run.node,
        "reason": run.reason, "task_id": run.task_id, "at": run.updated_at.isoformat()}, "key": str(run.id)})
    await hive.publish(conn, topic=f"runs.{run.agent}", messages=[message], sender=ACTOR)


async def apply(conn: AsyncConnection, runs: list[Run], settings: Settings) -> bool:
    """Applies the outcomes of state changes; True when something was published on HiveMind."""
    published = False
    for run in runs:
        if run.task_id is not None and (run.state in FINAL_STATES or _target_status(run, settings)):
            await _guarded(conn, run, "task", _task_outcome(conn, run, settings))
        if settings.runs_publish_states:
            published = await _guarded(conn, run, "hive", _publish(conn, run)) or published
    return published


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
