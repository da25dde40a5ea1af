"""HiveMind over HTTP: /v1/hive/topics …, subscriptions (SSE, WebSocket), memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, Header, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse

from alai.server import idempotency, streams
from alai.server.deps import (
    Connection,
    Principal,
    actor_name,
    api_router,
    authenticate_websocket,
    if_match_version,
    require_scope,
)
from alai.server.hive import service
from alai.server.problems import ProblemError
from alai.wire.hive import Batch, MemoryEntry, MemoryPut, MessageIn, MessagePage, Published, Topic, TopicSettings

READ = Depends(require_scope("hive:read"))
KEEPALIVE_SECONDS = 15.0


async def _start_position(conn, value: str | None) -> streams.Position | None:
    """"now"/None → None; "<tx>-<id>" → that position; "<id>" → after that message."""
    if value is None or value.strip().lower() in ("", "now"):
        return None
    text = value.strip()
    try:
        if "-" in text:
            return streams.parse_position_text(text)
        message_id = int(text)
        if message_id > streams.MAX_ID:
            raise ValueError("out of range")
    except ValueError:
        raise ProblemError(400, f"{value!r} is not a message id, a position, or 'now'", slug="bad-resume-id") from None
    return await service.position_of_id(conn, message_id=message_id)


def router_factory():
    router = api_router(prefix="/v1/hive", tags=["hive"])

    async def _publish(request: Request, conn, topic: str, messages: list[MessageIn], principal: Principal,
                       key: str | None, body_for_hash: object) -> JSONResponse:
        async with conn.transaction():
            if key is not None:
                stored = await idempotency.claim(
                    conn, table="hive_idempotency", principal=principal.subject, key=idempotency.check_key(key),
                    fingerprint=idempotency.request_hash({"topic": topic, "body": body_for_hash}))
                if stored is not None:
                    return JSONResponse(stored.response, status_code=stored.status)
            published = await service.publish(conn, topic=topic, messages=messages, sender=actor_name(principal))
            if key is not None:
                await idempotency.record(conn, table="hive_idempotency", principal=principal.subject, key=key,
                                         status=201, response=published.model_dump(mode="json"))
        request.app.state.hive_notifier.mark()  # after the commit: subscribers can see it now
        return JSONResponse(published.model_dump(mode="json"), status_code=201)

    @router.post("/topics/{topic}/messages", response_model=Published, status_code=201)
    async def publish_one(topic: str, body: MessageIn, request: Request, conn: Connection,
                          principal: Principal = Depends(require_scope("hive:write")),
                          idempotency_key: Annotated[str | None, Header()] = None) -> JSONResponse:
        """Publishes one message (`json` or `text`); the topic is created on first use."""
        return await _publish(request, conn, topic, [body], principal, idempotency_key,
                              body.model_dump(mode="json", by_alias=True))

    @router.post("/topics/{topic}/batch", response_model=Published, status_code=201)
    async def publish_batch(topic: str, body: Batch, request: Request, conn: Connection,
                            principal: Principal = Depends(require_scope("hive:write")),
                            idempotency_key: Annotated[str | None, Header()] = None) -> JSONResponse:
        """Publishes up to 1,000 messages in one transaction, in order."""
        return await _publish(request, conn, topic, body.messages, principal, idempotency_key,
                              body.model_dump(mode="json", by_alias=True))

    @router.get("/topics", response_model=list[Topic], dependencies=[READ])
    async def topics(conn: Connection) -> list[Topic]:
        """Topics with their message counts, retention and last activity."""
        return await service.list_topics(conn)

    @router.get("/topics/{topic}", response_model=Topic, dependencies=[READ])
    async def topic(topic: str, conn: Connection) -> Topic:
        """One topic."""
        return await service.get_topic(conn, name=topic)

    @router.put("/topics/{topic}", response_model=Topic)
    async def put_topic(topic: str, body: TopicSettings, conn: Connection,
                        principal: Principal = Depends(require_scope("hive:write"))) -> Topic:
        """Creates a topic or changes its description and retention (age and/or count)."""
        async with conn.transaction():
            return await service.put_topic(conn, name=topic, settings=body, actor=actor_name(principal))

    @router.get("/topics/{topic}/messages", response_model=MessagePage, dependencies=[READ])
    async def history(topic: str, conn: Connection, after_id: Annotated[int | None, Query(ge=0)] = None,
                      since: datetime | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      order: Literal["asc", "desc"] = "asc") -> MessagePage:
        """Stored messages of a topic: after an id or a time, oldest (asc) or newest (desc) first."""
        return await service.history(conn, topic=topic, after_id=after_id, since=since, limit=limit,
                                     newest_first=order == "desc")

    @router.get("/subscribe", dependencies=[READ])
    async def subscribe_sse(request: Request, topic: Annotated[str, Query(max_length=200)],
                            from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
                            last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
        """Server-Sent Events of a topic or pattern (agents.*, tenders.>); resume with Last-Event-ID."""
        matcher = service.compile_pattern(topic)
        async with request.app.state.pool.connection() as conn:
            start = await _start_position(conn, last_event_id if last_event_id is not None else from_)
            if start is None:
                start = await service.current_position(conn)
        hub: streams.Hub = request.app.state.hive_hub

        async def body():
            loop = asyncio.get_running_loop()
            last_sent = loop.time()
            position = streams.format_position(start)
            yield f": subscribed\nid: {position}\n\n"
            try:
                async for message in hub.subscribe(after=start, accepts=lambda m: bool(matcher.match(m.topic))):
                    if request.app.state.draining or await request.is_disconnected():
                        return
                    if message is not None:
                        position = message.position
                        yield f"id: {position}\nevent: message\ndata: {message.json_text()}\n\n"
                        last_sent = loop.time()
                    elif loop.time() - last_sent > KEEPALIVE_SECONDS:
                        yield ": keepalive\n\n"
                        last_sent = loop.time()
            except streams.Overflow:
                yield f"event: overflow\ndata: {json.dumps({'resume_from': position})}\n\n"

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @router.websocket("/stream")
    async def subscribe_ws(websocket: WebSocket, topic: str = "", after: str | None = None) -> None:
        """Messages of a topic or pattern as JSON; reconnect with ?after=<last position> to resume."""
        if await authenticate_websocket(websocket, "hive:read") is None:
            return
        try:
            matcher = service.compile_pattern(topic)
            async with websocket.app.state.pool.connection() as conn:
                start = await _start_position(conn, after)
                if start is None:
                    start = await service.current_position(conn)
        except ProblemError as error:
            await websocket.close(code=1008, reason=error.detail[:120])
            return
        await websocket.accept()
        hub: streams.Hub = websocket.app.state.hive_hub

        async def watch_disconnect() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while True:
                    await websocket.receive_text()

        closer = asyncio.create_task(watch_disconnect())
        position = streams.format_position(start)
        try:
            async for message in hub.subscribe(after=start, accepts=lambda m: bool(matcher.match(m.topic))):
                if closer.done():
                    return
                if websocket.app.state.draining:
                    await websocket.close(code=1012, reason="server restarting; reconnect with ?after=")
                    return
                if message is not None:
                    await websocket.send_text(message.json_text())
                    position = message.position
        except streams.Overflow:
            await websocket.send_text(json.dumps({"overflow": True, "resume_from": position}))
            await websocket.close(code=1013, reason="too far behind; reconnect with ?after=<resume_from>")
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            closer.cancel()

    subscribe_ws.alai_scope = "hive:read"  # type: ignore[attr-defined]

    @router.get("/memory/{namespace}", response_model=list[MemoryEntry], dependencies=[READ])
    async def memory_list(namespace: str, conn: Connection, prefix: Annotated[str, Query(max_length=200)] = "",
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[MemoryEntry]:
        """Keys of a namespace (optionally starting with `prefix`)."""
        return await service.memory_list(conn, namespace=namespace, prefix=prefix, limit=limit)

    @router.get("/memory/{namespace}/{key:path}", response_model=MemoryEntry, dependencies=[READ])
    async def memory_get(namespace: str, key: str, conn: Connection) -> JSONResponse:
        """One value; its ETag is its version."""
        entry = await service.memory_get(conn, namespace=namespace, key=key)
        return JSONResponse(entry.model_dump(mode="json"), headers={"ETag": f'"{entry.version}"'})

    @router.put("/memory/{namespace}/{key:path}", response_model=MemoryEntry)
    async def memory_put(namespace: str, key: str, body: MemoryPut, request: Request, conn: Connection,
                         principal: Principal = Depends(require_scope("hive:write")),
                         if_match: Annotated[str | None, Header()] = None,
                         if_none_match: Annotated[str | None, Header()] = None) -> JSONResponse:
        """Sets a value; If-Match: "<version>" refuses a stale write (412); If-None-Match: * only creates."""
        async with conn.transaction():
            entry, created = await service.memory_put(
                conn, namespace=namespace, key=key, value=body.value, actor=actor_name(principal),
                if_match=if_match_version(if_match), if_none_match=(if_none_match or "").strip() == "*")
        request.app.state.hive_notifier.mark()
        return JSONResponse(entry.model_dump(mode="json"), status_code=201 if created else 200,
                            headers={"ETag": f'"{entry.version}"'})

    @router.delete("/memory/{namespace}/{key:path}", status_code=204)
    async def memory_delete(namespace: str, key: str, request: Request, conn: Connection,
                            principal: Principal = Depends(require_scope("hive:write")),
                            if_match: Annotated[str | None, Header()] = None) -> Response:
        """Deletes a value (If-Match honoured)."""
        async with conn.transaction():
            await service.memory_delete(conn, namespace=namespace, key=key, actor=actor_name(principal),
                                        if_match=if_match_version(if_match))
        request.app.state.hive_notifier.mark()
        return Response(status_code=204)

    return router
