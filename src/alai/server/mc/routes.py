"""Mission Control over HTTP: /v1/mc/tasks …, the change log, and the live stream."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Header, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse

from alai.server import idempotency
from alai.server.deps import (
    Connection,
    Principal,
    actor_name,
    api_router,
    authenticate_websocket,
    if_match_version,
    require_scope,
)
from alai.server.mc import service, stream
from alai.server.mc.service import TaskFilter, Workflow
from alai.server.problems import ProblemError
from alai.server.settings import comma_list
from alai.wire.mc import (
    BulkResult,
    BulkUpdate,
    Comment,
    CommentCreate,
    Event,
    HistoryPage,
    Task,
    TaskCreate,
    TaskPage,
    TaskPatch,
)

READ = Depends(require_scope("mc:read"))
KEEPALIVE_SECONDS = 15.0


def workflow_of(request: Request) -> Workflow:
    settings = request.app.state.settings
    return Workflow(statuses=tuple(comma_list(settings.mc_statuses)),
                    closed=frozenset(comma_list(settings.mc_closed_statuses)))


def _etag(task: Task) -> dict[str, str]:
    return {"ETag": f'"{task.version}"'}


def _task_response(task: Task, status: int = 200) -> JSONResponse:
    return JSONResponse(task.model_dump(mode="json"), status_code=status, headers=_etag(task))


def _filter_from(status: str | None, assignee: str | None, project: str | None) -> stream.EventFilter:
    return stream.EventFilter(status=frozenset(status.split(",")) if status else None, assignee=assignee,
                              project=project)


async def _position(conn, value: str | None) -> stream.Position | None:
    try:
        return await stream.parse_position(conn, value)
    except stream.BadPosition as error:
        raise ProblemError(400, f"{error}; resume from a position the stream sent", slug="bad-event-id") from None


def router_factory():
    router = api_router(prefix="/v1/mc", tags=["mc"])

    @router.get("/statuses", dependencies=[READ])
    async def statuses(request: Request) -> dict[str, list[str]]:
        """The workflow: statuses in order, and which of them close a task."""
        workflow = workflow_of(request)
        return {"statuses": list(workflow.statuses), "closed": sorted(workflow.closed)}

    @router.get("/tasks", response_model=TaskPage, dependencies=[READ])
    async def list_tasks(
        conn: Connection,
        status: str | None = None, assignee: str | None = None, project: str | None = None,
        label: str | None = None, parent: str | None = None, q: Annotated[str | None, Query(max_length=500)] = None,
        updated_since: datetime | None = None,
        archived: Literal["exclude", "include", "only"] = "exclude",
        sort: Literal["updated_at", "-updated_at", "created_at", "-created_at", "priority", "-priority", "id"]
        = "-updated_at",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> TaskPage:
        """Tasks with filters, sorted, a page at a time (`next_cursor`)."""
        where = TaskFilter(status=status.split(",") if status else None, assignee=assignee, project=project,
                           label=label, parent=parent, q=q, updated_since=updated_since, archived=archived)
        return await service.list_tasks(conn, where=where, sort=sort, limit=limit, cursor=cursor)

    @router.post("/tasks", response_model=Task, status_code=201)
    async def create_task(
        body: TaskCreate, request: Request, conn: Connection,
        principal: Principal = Depends(require_scope("mc:write")),
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """Creates a task. With `Idempotency-Key`, a retried request creates it once."""
        workflow = workflow_of(request)
        async with conn.transaction():
            if idempotency_key is not None:
                key = idempotency.check_key(idempotency_key)
                stored = await idempotency.claim(conn, table="mc_idempotency", principal=principal.subject, key=key,
                                                 fingerprint=idempotency.request_hash(body.model_dump(mode="json")))
                if stored is not None:
                    task = Task.model_validate(stored.response)
                    return _task_response(task, stored.status)
            task = await service.create_task(conn, data=body, actor=actor_name(principal), workflow=workflow)
            if idempotency_key is not None:
                await idempotency.record(conn, table="mc_idempotency", principal=principal.subject,
                                         key=idempotency_key, status=201, response=task.model_dump(mode="json"))
        response = _task_response(task, 201)
        response.headers["Location"] = f"/v1/mc/tasks/{task.id}"
        return response

    @router.get("/tasks/{task_id}", response_model=Task, dependencies=[READ])
    async def get_task(task_id: str, conn: Connection) -> JSONResponse:
        """One task; its ETag is its version (send it back in If-Match)."""
        return _task_response(await service.get_task(conn, task_id=task_id))

    @router.patch("/tasks/{task_id}", response_model=Task)
    async def patch_task(
        task_id: str, body: TaskPatch, request: Request, conn: Connection,
        principal: Principal = Depends(require_scope("mc:write")),
        if_match: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        """Changes the fields given. With If-Match, a stale version is refused with 412."""
        async with conn.transaction():
            task = await service.update_task(conn, task_id=task_id, patch=body, actor=actor_name(principal),
                                             workflow=workflow_of(request), if_match=if_match_version(if_match))
        return _task_response(task)

    @router.post("/tasks/{task_id}/archive", response_model=Task)
    async def archive(task_id: str, conn: Connection,
                      principal: Principal = Depends(require_scope("mc:write"))) -> JSONResponse:
        """Archives a task (nothing is deleted; `restore` brings it back)."""
        async with conn.transaction():
            return _task_response(await service.set_archived(conn, task_id=task_id, archived=True,
                                                             actor=actor_name(principal)))

    @router.post("/tasks/{task_id}/restore", response_model=Task)
    async def restore(task_id: str, conn: Connection,
                      principal: Principal = Depends(require_scope("mc:write"))) -> JSONResponse:
        """Restores an archived task."""
        async with conn.transaction():
            return _task_response(await service.set_archived(conn, task_id=task_id, archived=False,
                                                             actor=actor_name(principal)))

    @router.get("/tasks/{task_id}/comments", response_model=list[Comment], dependencies=[READ])
    async def comments(task_id: str, conn: Connection) -> list[Comment]:
        """Comments of a task, oldest first."""
        return await service.list_comments(conn, task_id=task_id)

    @router.post("/tasks/{task_id}/comments", response_model=Comment, status_code=201)
    async def comment(task_id: str, body: CommentCreate, conn: Connection,
                      principal: Principal = Depends(require_scope("mc:write"))) -> Comment:
        """Adds a comment (markdown)."""
        async with conn.transaction():
            return await service.add_comment(conn, task_id=task_id, body=body.body, actor=actor_name(principal))

    @router.get("/tasks/{task_id}/history", response_model=HistoryPage, dependencies=[READ])
    async def history(task_id: str, conn: Connection, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                      cursor: Annotated[str | None, Query(max_length=100)] = None) -> HistoryPage:
        """Every change of a task: who, when, old → new."""
        return await service.list_history(conn, task_id=task_id, limit=limit, cursor=cursor)

    @router.post("/bulk", response_model=BulkResult)
    async def bulk(body: BulkUpdate, request: Request, conn: Connection,
                   principal: Principal = Depends(require_scope("mc:write"))) -> BulkResult:
        """Applies one change to many tasks, all or nothing."""
        async with conn.transaction():
            tasks = await service.bulk_update(conn, where=body.where, patch=body.set, actor=actor_name(principal),
                                              workflow=workflow_of(request))
        return BulkResult(updated=len(tasks), ids=[t.id for t in tasks])

    @router.get("/events", response_model=list[Event], dependencies=[READ])
    async def events(conn: Connection, after: Annotated[str, Query(max_length=64)] = "0",
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[Event]:
        """Changes after a position (or event id; 0 = from the start), in order."""
        start = await _position(conn, after) or stream.START
        return await stream.visible_events(conn, after=start, limit=limit)

    @router.get("/events/stream", dependencies=[READ])
    async def event_stream(
        request: Request, after: Annotated[str | None, Query(max_length=64)] = None,
        last_event_id: Annotated[str | None, Header()] = None,
        status: str | None = None, assignee: str | None = None, project: str | None = None,
    ) -> StreamingResponse:
        """Server-Sent Events of every change; resume with Last-Event-ID (or ?after=)."""
        # A short-lived connection: the stream itself must not hold one for its life.
        # "Now" is fixed before the response starts, and sent as the first id, so a
        # change made right after the client connected is never missed.
        async with request.app.state.pool.connection() as conn:
            start = await _position(conn, last_event_id if last_event_id is not None else after)
            if start is None:
                start = await stream.current_position(conn)
        where = _filter_from(status, assignee, project)

        async def body():
            loop = asyncio.get_running_loop()
            last_sent = loop.time()
            yield f": connected\nid: {start[0]}-{start[1]}\n\n"
            async for event in stream.follow(request.app, after=start, where=where):
                if request.app.state.draining or await request.is_disconnected():
                    return
                if event is not None:
                    yield f"id: {event.position}\nevent: {event.kind}\ndata: {event.model_dump_json()}\n\n"
                    last_sent = loop.time()
                elif loop.time() - last_sent > KEEPALIVE_SECONDS:
                    yield ": keepalive\n\n"
                    last_sent = loop.time()

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @router.websocket("/stream")
    async def websocket_stream(websocket: WebSocket, after: str | None = None, status: str | None = None,
                               assignee: str | None = None, project: str | None = None) -> None:
        """Every change as JSON messages; reconnect with ?after=<last position seen> to resume."""
        if await authenticate_websocket(websocket, "mc:read") is None:
            return
        try:
            async with websocket.app.state.pool.connection() as conn:
                start = await stream.parse_position(conn, after)
                if start is None:  # "now", fixed before accepting: nothing after it is missed
                    start = await stream.current_position(conn)
        except stream.BadPosition as error:
            await websocket.close(code=1008, reason=str(error)[:120])
            return
        await websocket.accept()
        where = _filter_from(status, assignee, project)

        async def watch_disconnect() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await websocket.receive_text()

        closer = asyncio.create_task(watch_disconnect())
        try:
            async for event in stream.follow(websocket.app, after=start, where=where):
                if closer.done():
                    return
                if websocket.app.state.draining:
                    await websocket.close(code=1012, reason="server restarting; reconnect with ?after=")
                    return
                if event is not None:
                    await websocket.send_text(event.model_dump_json())
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            closer.cancel()

    websocket_stream.alai_scope = "mc:read"  # type: ignore[attr-defined]

    return router

