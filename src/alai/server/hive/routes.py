"""HiveMind over HTTP: /v1/hive/topics …, subscriptions (SSE, WebSocket), memory."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from typing import Annotated, Literal

import orjson
from fastapi import Depends, Header, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from alai.server import idempotency, streams, ws_direct
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
from alai.server.problems import ProblemError, body_openapi, read_body, validated_body
from alai.wire.hive import (
    BATCH_BODY_MAX_BYTES,
    MESSAGE_BODY_MAX_BYTES,
    Batch,
    MemoryEntry,
    MemoryPut,
    Message,
    MessageIn,
    MessagePage,
    Published,
    Topic,
    TopicSettings,
)

READ = Depends(require_scope("hive:read"))
KEEPALIVE_SECONDS = 15.0


async def _start_position(conn, value: str | None) -> streams.Position | None:
    """"now"/None → None; "<tx>-<id>" → that position; "<id>" → after that message."""
    if value is None or value.strip().lower() in ("", "now"):
        return None
    text = value.strip()
    try:
        if "-" in text:
            return await service.check_position(conn, streams.parse_position_text(text))
        message_id = int(text)
        if message_id > streams.MAX_ID:
            raise ValueError("out of range")
    except ValueError:
        raise ProblemError(400, f"{value!r} is not a message id, a position, or 'now'", slug="bad-resume-id") from None
    return await service.position_of_id(conn, message_id=message_id)


PUBLISH_IN_FLIGHT = 1000


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _problem_body(error: ProblemError) -> dict:
    from alai.wire.problem import problem_type

    return {"type": problem_type(error.slug), "title": error.title, "status": error.status, "detail": error.detail}


def _parse_frame(raw: str) -> dict:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise ProblemError(400, "a frame must be a JSON object: {\"topic\": …, \"json\": …}", slug="bad-frame")
    return data


def _frame_group(data: dict, sender: str) -> tuple[bool, service.Group]:
    """A publishing frame (without its ref) → (single?, group); ProblemError when it is wrong."""
    topic = data.pop("topic", None)
    if not isinstance(topic, str):
        raise ProblemError(422, "a frame needs \"topic\"", slug="bad-frame")
    service.check_publishable(topic)
    try:
        if "messages" in data:
            messages, single = Batch.model_validate(data).messages, False
        else:
            messages, single = [MessageIn.model_validate(data)], True
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise ProblemError(422, f"{where or 'frame'}: {first.get('msg', 'invalid')}", slug="bad-frame") from None
    return single, service.Group(topic, sender, [service.prepare(message) for message in messages])


def router_factory():
    router = api_router(prefix="/v1/hive", tags=["hive"])

    async def _publish(request: Request, topic: str, messages: list[MessageIn], principal: Principal,
                       key: str | None, body_for_hash: object) -> JSONResponse:
        service.check_publishable(topic)
        group = service.Group(topic, actor_name(principal), [service.prepare(message) for message in messages])
        if key is None:  # the common case: a group commit with other publishes
            published = await request.app.state.hive_publisher.publish(group)
            return JSONResponse(published.model_dump(mode="json"), status_code=201)
        # With a key, the record commits with the messages: a transaction of its own.
        async with request.app.state.pool.connection() as conn, conn.transaction():
            await service.lock_topics(conn, [topic])  # before the record: see service's docstring
            stored = await idempotency.claim(
                conn, table="hive_idempotency", principal=principal.subject, key=idempotency.check_key(key),
                fingerprint=idempotency.request_hash({"topic": topic, "body": body_for_hash}))
            if stored is not None:
                return JSONResponse(stored.response, status_code=stored.status)
            published = (await service.publish_groups(conn, [group]))[0]
            await idempotency.record(conn, table="hive_idempotency", principal=principal.subject, key=key,
                                     status=201, response=published.model_dump(mode="json"))
        request.app.state.hive_notifier.mark()  # after the commit: subscribers can see it now
        return JSONResponse(published.model_dump(mode="json"), status_code=201)

    # Both read their own bodies (problems.read_body): a body past the limit is refused
    # from its Content-Length or as it streams in, never read whole first.
    @router.post("/topics/{topic}/messages", response_model=Published, status_code=201,
                 openapi_extra=body_openapi(MessageIn))
    async def publish_one(topic: str, request: Request,
                          principal: Principal = Depends(require_scope("hive:write")),
                          idempotency_key: Annotated[str | None, Header()] = None) -> JSONResponse:
        """Publishes one message (`json` or `text`); the topic is created on first use."""
        body = validated_body(MessageIn, await read_body(request, MESSAGE_BODY_MAX_BYTES))
        return await _publish(request, topic, [body], principal, idempotency_key,
                              body.model_dump(mode="json", by_alias=True))

    @router.post("/topics/{topic}/batch", response_model=Published, status_code=201,
                 openapi_extra=body_openapi(Batch))
    async def publish_batch(topic: str, request: Request,
                            principal: Principal = Depends(require_scope("hive:write")),
                            idempotency_key: Annotated[str | None, Header()] = None) -> JSONResponse:
        """Publishes up to 1,000 messages in one transaction, in order."""
        body = validated_body(Batch, await read_body(request, BATCH_BODY_MAX_BYTES))
        return await _publish(request, topic, body.messages, principal, idempotency_key,
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
                async for chunk in hub.subscribe_chunks(after=start, accepts=lambda m: bool(matcher.match(m.topic)),
                                                        key=topic):
                    if request.app.state.draining or await request.is_disconnected():
                        return
                    if chunk.rows:
                        # One write per chunk, however many events it holds.
                        yield "".join(f"id: {message.position}\nevent: message\ndata: {message.json_text()}\n\n"
                                      for message in chunk.rows)
                        position = chunk.rows[-1].position
                        last_sent = loop.time()
                    elif loop.time() - last_sent > KEEPALIVE_SECONDS:
                        yield ": keepalive\n\n"
                        last_sent = loop.time()
            except streams.Overflow:
                yield f"event: overflow\ndata: {json.dumps({'resume_from': position})}\n\n"

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @router.websocket("/stream")
    async def subscribe_ws(websocket: WebSocket, topic: str = "", after: str | None = None,
                           batch: bool = False) -> None:
        """Messages of a topic or pattern as JSON, one per frame, or with ?batch=true a JSON
        array of those ready together per frame (far fewer frames under load); reconnect
        with ?after=<last position> to resume."""
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
        state = websocket.app.state  # looked up once: per frame it cost a few per cent of the hub's CPU
        sink = None
        write = ws_direct.frame_writer(websocket.scope)
        if write is not None:
            frames_of = _array_frame if batch else _message_frames

            def sink(chunk: streams.Chunk[Message]) -> bool:
                nonlocal position
                if state.draining or not write(chunk.once(frames_of.__name__, frames_of)):
                    return False  # through the loop below, which closes or waits for the client
                position = chunk.rows[-1].position
                return True

        try:
            async for chunk in hub.subscribe_chunks(after=start, accepts=lambda m: bool(matcher.match(m.topic)),
                                                    key=topic, sink=sink):
                if closer.done():
                    return
                if state.draining:
                    await websocket.close(code=1012, reason="server restarting; reconnect with ?after=")
                    return
                if not chunk.rows:
                    continue
                if batch:  # the same text for every subscriber of this pattern: made once
                    await websocket.send_text(chunk.json_array(Message.json_text))
                else:
                    for message in chunk.rows:
                        await websocket.send_text(message.json_text())
                position = chunk.rows[-1].position
        except streams.Overflow:
            await websocket.send_text(json.dumps({"overflow": True, "resume_from": position}))
            await websocket.close(code=1013, reason="too far behind; reconnect with ?after=<resume_from>")
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            closer.cancel()

    subscribe_ws.alai_scope = "hive:read"  # type: ignore[attr-defined]

    def _array_frame(chunk: streams.Chunk[Message]) -> bytes:
        return ws_direct.text_frame(chunk.json_array(Message.json_text))

    def _message_frames(chunk: streams.Chunk[Message]) -> bytes:
        return b"".join(ws_direct.text_frame(message.json_text()) for message in chunk.rows)

    @router.websocket("/publish")
    async def publish_ws(websocket: WebSocket) -> None:
        """Publishes over one connection, pipelined: frames `{"topic", "json"|"text", "key"?, "headers"?,
        "ref"?}` (or `"messages": [...]` for several), each answered in order once stored:
        `{"ref", "id", "position"}` (`"ids"`, `"positions"`) or `{"ref", "error": <problem>}`."""
        principal = await authenticate_websocket(websocket, "hive:write")
        if principal is None:
            return
        await websocket.accept()
        publisher = websocket.app.state.hive_publisher
        sender = actor_name(principal)
        # Answers in the order frames came; bounded, so a client that never reads its
        # answers stops being read from instead of growing the server's memory.
        answers: asyncio.Queue = asyncio.Queue(PUBLISH_IN_FLIGHT)

        async def answer() -> None:
            while True:
                ref, single, outcome = await answers.get()
                if isinstance(outcome, ProblemError):
                    frame = {"ref": ref, "error": _problem_body(outcome)}
                else:
                    try:
                        published = await outcome
                    except ProblemError as error:
                        frame = {"ref": ref, "error": _problem_body(error)}
                    else:
                        frame = {"ref": ref, "id": published.ids[0], "position": published.positions[0]} if single \
                            else {"ref": ref, "ids": published.ids, "positions": published.positions}
                await websocket.send_text(orjson.dumps(frame).decode())

        answering = asyncio.create_task(answer())
        try:
            while True:
                raw = await websocket.receive_text()
                if answering.done():
                    return
                ref, single = None, True
                try:
                    data = _parse_frame(raw)
                    ref = data.pop("ref", None)
                    single, group = _frame_group(data, sender)
                    outcome = publisher.submit(group)
                    # Stored even if the client leaves before its answer; nobody awaits it then.
                    outcome.add_done_callback(_consume)
                except ProblemError as error:
                    outcome = error
                await answers.put((ref, single, outcome))
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            # Frames already queued are stored all the same: their futures run on.
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answering

    publish_ws.alai_scope = "hive:write"  # type: ignore[attr-defined]

    @router.get("/memory/{namespace}", response_model=list[MemoryEntry], dependencies=[READ])
    async def memory_list(namespace: str, conn: Connection, prefix: Annotated[str, Query(max_length=200)] = "",
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                          after: Annotated[str | None, Query(max_length=200)] = None) -> list[MemoryEntry]:
        """Keys of a namespace in key order (optionally starting with `prefix`); `after` = the last key
        of the previous page."""
        return await service.memory_list(conn, namespace=namespace, prefix=prefix, limit=limit, after=after)

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
