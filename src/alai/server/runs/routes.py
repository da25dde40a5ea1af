"""The runner over HTTP: agents, runs and their events (people), nodes and the
worker protocol (register, heartbeat, long-poll claim, guarded writes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.background import BackgroundTask

from alai.server import idempotency, streams
from alai.server.deps import (
    ADMIN_SCOPE,
    Connection,
    Principal,
    actor_name,
    api_router,
    authenticate_websocket,
    current_principal,
    require_scope,
)
from alai.server.problems import ProblemError, body_openapi, problem_body, validated_body
from alai.server.runs import agents, nodes, outcomes, service
from alai.wire.runs import (
    Agent,
    AgentPut,
    Claim,
    ClaimRequest,
    Completion,
    CompletionResult,
    CompletionResults,
    Completions,
    EventsIn,
    Heartbeat,
    HeartbeatReply,
    Node,
    NodeRegister,
    Run,
    RunCreate,
    RunEventPage,
    RunPage,
    RunResult,
    RunState,
)

READ = Depends(require_scope("runs:read"))
NODE_SCOPE = "node"
KEEPALIVE_SECONDS = 15.0
FOLLOW_POLL_SECONDS = 1.0


def limits_of(app) -> service.Limits:
    settings = app.state.settings
    return service.Limits(lease_seconds=settings.runs_lease_seconds, offline_seconds=settings.nodes_offline_seconds,
                          default_model=settings.runs_default_model)


async def after_commit(app, changed: list[Run] = ()) -> None:
    """Wakes this replica's claimers and followers at once (others hear the NOTIFY), and
    publishes the state changes on HiveMind."""
    await app.state.runs_wakeup.bump()
    if changed and app.state.settings.runs_publish_states:
        await outcomes.publish_states(app, changed)


async def apply_outcomes(app, runs: list[Run]) -> None:
    """After a claim: the linked tasks move (only when there are any), the states are published."""
    if any(run.task_id for run in runs):
        async with app.state.pool.connection() as conn, conn.transaction():
            await outcomes.apply(conn, runs, app.state.settings)
    await after_commit(app, runs)


async def _task_exists(conn, task_id: str) -> bool:
    from alai.server.mc import service as mc

    try:
        await mc.get_task(conn, task_id=task_id)
    except ProblemError:
        return False
    return True


async def follow(app, *, run_id: int, after: streams.Position) -> AsyncIterator[service.RunEvent | None]:
    """A run's events after `after`, until its final state event; None as an idle tick."""
    wakeup: streams.Wakeup = app.state.runs_wakeup
    while True:
        generation = wakeup.generation
        async with app.state.pool.connection() as conn:
            batch = await service.final_events(conn, run_id=run_id, after=after)
            if not batch:
                # A run that ended before this follower came, or whose last event it has seen.
                row = await (await conn.execute(
                    "SELECT r.state, EXISTS (SELECT 1 FROM run_events e WHERE e.run_id = r.id "
                    "AND (e.tx, e.id) > (%s::xid8, %s)) AS more FROM runs r WHERE r.id = %s",
                    (str(after[0]), after[1], run_id))).fetchone()
                if row is None or (row["state"] in service.FINAL_STATES and not row["more"]):
                    return
        for event in batch:
            after = streams.parse_position_text(event.position)
            yield event
            if service.is_final_event(event):
                return
        if len(batch) == 500:
            continue
        await wakeup.wait(generation, FOLLOW_POLL_SECONDS)
        yield None


def router_factory():
    router = api_router(prefix="/v1", tags=["runs"])

    # -- agents -------------------------------------------------------------------------------

    @router.put("/agents/{name}", response_model=Agent)
    async def put_agent(name: str, body: AgentPut, conn: Connection, response: Response,
                        principal: Principal = Depends(require_scope("runs:write"))) -> Agent:
        """Registers an agent definition (Markdown with YAML front matter); a changed
        text is a new version, the same text changes nothing."""
        async with conn.transaction():
            agent, changed = await agents.put(conn, name=name, definition=body.definition,
                                              actor=actor_name(principal))
        response.status_code = 201 if changed and agent.version == 1 else 200
        return agent

    @router.get("/agents", response_model=list[Agent], dependencies=[READ])
    async def list_agents(conn: Connection) -> list[Agent]:
        """The registered agents, current versions."""
        return await agents.list_all(conn)

    @router.get("/agents/{name}", response_model=Agent, dependencies=[READ])
    async def get_agent(name: str, conn: Connection,
                        version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> Agent:
        """One agent: its current version, or `?version=N`."""
        return await agents.get(conn, name=name, version=version)

    @router.delete("/agents/{name}", status_code=204, dependencies=[Depends(require_scope("runs:write"))])
    async def delete_agent(name: str, conn: Connection) -> Response:
        """Unregisters an agent; runs already made keep their version."""
        await agents.delete(conn, name=name)
        return Response(status_code=204)

    # -- runs ---------------------------------------------------------------------------------

    # A direct route (server/direct_routes.py): the busiest call of the runner, so it reads
    # its body and header itself; the OpenAPI document still describes both.
    @router.post("/runs", response_model=Run, status_code=201, dependencies=[Depends(require_scope("runs:write"))],
                 openapi_extra=body_openapi(RunCreate) | {
                     "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                     "schema": {"type": "string"}}]})
    async def create_run(request: Request) -> JSONResponse:
        """Dispatches a run of an agent: queued (a capable worker is online) or waiting (why)."""
        app = request.app
        body = validated_body(RunCreate, await request.body())
        principal = await current_principal(request)
        idempotency_key = request.headers.get("idempotency-key")
        # A plain create is one statement, its own transaction (service.create); a key to
        # record or a task to move joins them in one.
        alone = idempotency_key is None and body.task_id is None
        async with app.state.pool.connection() as conn, \
                (contextlib.nullcontext() if alone else conn.transaction()):
            if idempotency_key is not None:
                stored = await idempotency.claim(
                    conn, table="run_idempotency", principal=principal.subject,
                    key=idempotency.check_key(idempotency_key),
                    fingerprint=idempotency.request_hash(body.model_dump(mode="json")))
                if stored is not None:
                    return JSONResponse(stored.response, status_code=stored.status)
            run = await service.create(conn, body=body, actor=actor_name(principal), limits=limits_of(app),
                                       task_exists=_task_exists, agents_seen=app.state.runs_agents_seen)
            await outcomes.apply(conn, [run], app.state.settings)
            answer = run.model_dump(mode="json")
            if idempotency_key is not None:
                await idempotency.record(conn, table="run_idempotency", principal=principal.subject,
                                         key=idempotency_key, status=201, response=answer)
        await after_commit(app, [run])
        return JSONResponse(answer, status_code=201, headers={"Location": f"/v1/runs/{run.id}"})

    @router.get("/runs", response_model=RunPage, dependencies=[READ])
    async def list_runs(conn: Connection, agent: str | None = None,
                        state: Annotated[list[RunState] | None, Query()] = None,
                        task_id: str | None = None, node: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50,
                        cursor: Annotated[str | None, Query(max_length=200)] = None) -> RunPage:
        """Runs, newest first, filtered by agent, state (repeatable), task or node."""
        return await service.list_runs(conn, agent=agent, states=state, task_id=task_id, node=node, limit=limit,
                                       cursor=cursor)

    @router.get("/runs/{run_id}", response_model=Run, dependencies=[READ])
    async def get_run(run_id: int, conn: Connection) -> Run:
        """One run and its state."""
        return await service.get(conn, run_id=run_id)

    @router.get("/runs/{run_id}/result", response_model=RunResult, dependencies=[READ])
    async def get_result(run_id: int, conn: Connection) -> RunResult:
        """A finished run's output, error and usage (409 while it is not finished)."""
        return await service.result(conn, run_id=run_id)

    @router.post("/runs/{run_id}/cancel", response_model=Run)
    async def cancel_run(run_id: int, request: Request,
                         principal: Principal = Depends(require_scope("runs:write"))) -> Run:
        """Cancels a run: at once if it has not started, else its worker stops it."""
        async with request.app.state.pool.connection() as conn, conn.transaction():
            run = await service.cancel(conn, run_id=run_id, actor=actor_name(principal))
            await outcomes.apply(conn, [run], request.app.state.settings)
        await after_commit(request.app, [run])
        return run

    @router.get("/runs/{run_id}/events", response_model=RunEventPage, dependencies=[READ])
    async def run_events(run_id: int, conn: Connection,
                         after: Annotated[str | None, Query(max_length=64)] = None,
                         limit: Annotated[int, Query(ge=1, le=1000)] = 500) -> RunEventPage:
        """A run's events (states, output chunks, tool calls, usage), oldest first."""
        position = await service.event_position(conn, run_id=run_id, value=after)
        return await service.events(conn, run_id=run_id, after=position, limit=limit)

    @router.get("/runs/{run_id}/stream", dependencies=[READ])
    async def stream_events(run_id: int, request: Request,
                            after: Annotated[str | None, Query(max_length=64)] = None,
                            last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
        """Server-Sent Events of a run, from its start or after Last-Event-ID (or ?after=);
        the stream ends after the run's final state."""
        app = request.app
        async with app.state.pool.connection() as conn:
            await service.get(conn, run_id=run_id)
            start = await service.event_position(conn, run_id=run_id,
                                                 value=last_event_id if last_event_id is not None else after)

        async def body():
            loop = asyncio.get_running_loop()
            last_sent = loop.time()
            yield f": run {run_id}\n\n"
            async for event in follow(app, run_id=run_id, after=start):
                if event is None:
                    if app.state.draining or await request.is_disconnected():
                        return
                    if loop.time() - last_sent > KEEPALIVE_SECONDS:
                        yield ": keepalive\n\n"
                        last_sent = loop.time()
                    continue
                yield f"id: {event.position}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"
                last_sent = loop.time()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @router.websocket("/runs/{run_id}/ws")
    async def stream_ws(websocket: WebSocket, run_id: int, after: str | None = None) -> None:
        """A run's events as JSON text frames (resume with ?after=<position>); closed (1000)
        after the final state."""
        if await authenticate_websocket(websocket, "runs:read") is None:
            return
        app = websocket.app
        try:
            async with app.state.pool.connection() as conn:
                await service.get(conn, run_id=run_id)
                start = await service.event_position(conn, run_id=run_id, value=after)
        except ProblemError as error:
            await websocket.close(code=1008, reason=error.detail[:120])
            return
        await websocket.accept()

        async def watch_disconnect() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await websocket.receive_text()

        closer = asyncio.create_task(watch_disconnect())
        try:
            async for event in follow(app, run_id=run_id, after=start):
                if closer.done():
                    return
                if app.state.draining:
                    await websocket.close(code=1012, reason="server restarting; reconnect with ?after=")
                    return
                if event is not None:
                    await websocket.send_text(event.model_dump_json())
            await websocket.close(code=1000)
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            closer.cancel()

    stream_ws.alai_scope = "runs:read"  # type: ignore[attr-defined]

    # -- nodes and the worker protocol ------------------------------------------------------

    @router.get("/nodes", response_model=list[Node], dependencies=[READ])
    async def list_nodes(request: Request, conn: Connection) -> list[Node]:
        """Nodes and workers: online or not, last heartbeat, models, runs they hold."""
        return await nodes.list_nodes(conn, offline_seconds=request.app.state.settings.nodes_offline_seconds)

    @router.put("/nodes/{name}", response_model=Node)
    async def register_node(name: str, body: NodeRegister, request: Request, conn: Connection,
                            principal: Principal = Depends(require_scope(NODE_SCOPE))) -> Node:
        """Registers a node (or a cloud worker) with its capabilities, or updates them."""
        node = await nodes.register(conn, name=name, principal=principal.subject, body=body,
                                    offline_seconds=request.app.state.settings.nodes_offline_seconds,
                                    may_take_over=ADMIN_SCOPE in principal.scopes)
        await after_commit(request.app)  # runs it can take may now be claimed
        return node

    @router.post("/nodes/{name}/heartbeat", response_model=HeartbeatReply)
    async def heartbeat(name: str, body: Heartbeat, request: Request, conn: Connection,
                        principal: Principal = Depends(require_scope(NODE_SCOPE))) -> HeartbeatReply:
        """Renews the leases of the runs the node holds; says which to stop and which are lost."""
        limits = limits_of(request.app)
        async with conn.transaction():
            await nodes.touch(conn, name=name, principal=principal.subject, capabilities=body.capabilities)
            stop, lost = await service.renew(conn, node=name, held=body.running, limits=limits)
        return HeartbeatReply(lease_seconds=limits.lease_seconds, cancel=stop, lost=lost)

    @router.post("/nodes/{name}/claim", response_model=list[Claim])
    async def claim(name: str, body: ClaimRequest, request: Request,
                    principal: Principal = Depends(require_scope(NODE_SCOPE))) -> Response:
        """Up to `capacity` runs this node can execute; waits up to `wait` seconds for one."""
        app = request.app
        limits = limits_of(app)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + body.wait
        wakeup: streams.Wakeup = app.state.runs_wakeup
        async with app.state.pool.connection() as conn:
            capabilities = await nodes.capabilities_of(conn, name=name, principal=principal.subject)
        while True:
            generation = wakeup.generation
            async with app.state.pool.connection() as conn:
                claims = await service.claim(conn, node=name, capabilities=capabilities, capacity=body.capacity,
                                             limits=limits)
            if claims:
                for claimed in claims:
                    claimed.token = _run_token(app, claimed)
                return JSONResponse([claim.model_dump(mode="json") for claim in claims],
                                    background=BackgroundTask(apply_outcomes, app, [c.run for c in claims]))
            remaining = deadline - loop.time()
            if remaining <= 0 or app.state.draining or await request.is_disconnected():
                return JSONResponse([])
            await wakeup.wait(generation, min(remaining, FOLLOW_POLL_SECONDS))

    @router.post("/runs/{run_id}/attempts/{attempt}/events", status_code=204)
    async def post_events(run_id: int, attempt: int, body: EventsIn, request: Request, conn: Connection,
                          principal: Principal = Depends(require_scope(NODE_SCOPE)),
                          x_alai_node: Annotated[str | None, Header()] = None) -> Response:
        """Stores events of the current attempt (409 if it is not current any more)."""
        node = await _node_of(conn, principal, x_alai_node)
        async with conn.transaction():
            await service.add_events(conn, run_id=run_id, attempt=attempt, node=node, items=body.events)
        await after_commit(request.app)
        return Response(status_code=204)

    @router.post("/runs/{run_id}/attempts/{attempt}/complete", response_model=Run)
    async def complete(run_id: int, attempt: int, body: Completion, request: Request, conn: Connection,
                       principal: Principal = Depends(require_scope(NODE_SCOPE)),
                       x_alai_node: Annotated[str | None, Header()] = None) -> Run:
        """Ends the current attempt: succeeded, failed (retried while attempts remain),
        cancelled or timed out. 409 if the attempt is not current any more."""
        node = await _node_of(conn, principal, x_alai_node)
        async with conn.transaction():
            ended = await service.complete(conn, run_id=run_id, attempt=attempt, node=node, body=body)
            await outcomes.apply(conn, ended.changed, request.app.state.settings)
        await after_commit(request.app, ended.changed)
        return ended.answers[0][0]

    @router.post("/runs/completions", response_model=CompletionResults)
    async def complete_many(body: Completions, request: Request, conn: Connection,
                            principal: Principal = Depends(require_scope(NODE_SCOPE)),
                            x_alai_node: Annotated[str | None, Header()] = None) -> CompletionResults:
        """Ends several attempts in one call and one transaction — what a busy worker has
        finished while its previous call was out. Each item is answered as
        `.../attempts/{attempt}/complete` would answer it: status 200 with the run, or its
        problem (404, 409), which leaves the other items alone."""
        node = await _node_of(conn, principal, x_alai_node)
        async with conn.transaction():
            ended = await service.complete_many(conn, node=node, items=body.items)
            await outcomes.apply(conn, ended.changed, request.app.state.settings)
        await after_commit(request.app, ended.changed)
        return CompletionResults(items=[
            CompletionResult(run_id=item.run_id, attempt=item.attempt, status=200, run=run) if run is not None
            else CompletionResult(run_id=item.run_id, attempt=item.attempt, status=error.status,
                                  problem=problem_body(error))
            for item, (run, error) in zip(body.items, ended.answers, strict=True)])

    @router.post("/runs/{run_id}/attempts/{attempt}/release", response_model=Run)
    async def release(run_id: int, attempt: int, request: Request, conn: Connection,
                      principal: Principal = Depends(require_scope(NODE_SCOPE)),
                      x_alai_node: Annotated[str | None, Header()] = None) -> Run:
        """Gives a run back to the queue (the worker is stopping); the attempt is not counted."""
        node = await _node_of(conn, principal, x_alai_node)
        async with conn.transaction():
            run = await service.release(conn, run_id=run_id, attempt=attempt, node=node)
            await outcomes.apply(conn, [run], request.app.state.settings)
        await after_commit(request.app, [run])
        return run

    return router


def _run_token(app, claimed: Claim) -> str | None:
    """The run's own token, if its agent lists secrets: valid until a minute past the deadline."""
    if not claimed.agent.secrets:
        return None
    from datetime import UTC, datetime

    from alai.server.identity import jwt_tokens

    ttl = int((claimed.deadline - datetime.now(UTC)).total_seconds()) + 60
    return jwt_tokens.agent_token(app.state.keyring, issuer=app.state.settings.issuer, agent=claimed.agent.name,
                                  run_id=claimed.run.id, secret_paths=claimed.agent.secrets, ttl=max(ttl, 60))


async def _node_of(conn, principal: Principal, named: str | None) -> str:
    """The node a worker write comes from: the X-Alai-Node header, which must be a node
    this principal registered."""
    if not named:
        raise ProblemError(400, "worker writes name their node in the X-Alai-Node header", slug="no-node")
    await nodes.capabilities_of(conn, name=named, principal=principal.subject)
    return named
