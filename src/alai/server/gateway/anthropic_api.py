"""Anthropic's Messages API (`POST /v1/messages`), for the `anthropic` client and agents
built on it: passed through to Anthropic backends, or answered by OpenAI-compatible and
Ollama backends through translation (gateway/anthropic_messages.py). Errors in
Anthropic's shape: `{"type": "error", "error": {"type", "message"}}`.
"""

from __future__ import annotations

import httpx
import orjson
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from alai.server.deps import require_scope
from alai.server.gateway import anthropic_messages, translate
from alai.server.gateway.backends import describe
from alai.server.gateway.ollama_api import WAIT_HEADER, WAIT_MAX
from alai.server.gateway.proxy import Gateway, ModelNotFound, Unavailable, read_limited, request_problem
from alai.server.gateway.upstream import UpstreamResponse
from alai.server.gateway.usage import metering
from alai.server.streaming_response import WatchedStreamingResponse

USE = Depends(require_scope("gateway:use"))
PATH = "/v1/messages"


def anthropic_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(anthropic_messages.error_body(status, message), status_code=status, headers=headers)


async def _body(request: Request) -> dict | JSONResponse:
    raw = await read_limited(request)
    if raw is None:
        return anthropic_error(413, "the request body is too large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return anthropic_error(400, "the request body is not valid JSON")
    if not isinstance(body, dict):
        return anthropic_error(400, "the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return anthropic_error(400, "model: field required")
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return anthropic_error(400, "messages: at least one message is required")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        return anthropic_error(400, "max_tokens: a positive integer is required")
    problem = request_problem(body)
    if problem is not None:
        return anthropic_error(400, problem)
    return body


async def _renamed(lines, model: str):
    """An Anthropic backend's SSE with the model named as asked (message_start carries it)."""
    async for line in lines:
        if line.startswith("data:") and '"message_start"' in line:
            event = orjson.loads(line[5:])
            event.setdefault("message", {})["model"] = model
            line = "data: " + orjson.dumps(event).decode()
        yield line.encode() + b"\n"


async def _guarded(gateway: Gateway, attempt, response: UpstreamResponse, chunks):
    try:
        async for chunk in chunks:
            yield chunk
    except (httpx.TransportError, httpx.TimeoutException) as error:
        gateway.backends.mark_down(attempt.state, error)
        message = f"the backend {attempt.state.name} failed during the answer: {describe(error)}"
        yield b"event: error\ndata: " + orjson.dumps(anthropic_messages.error_body(502, message)) + b"\n\n"
    finally:
        await response.aclose()


async def _answer(request: Request, body: dict) -> Response:
    model: str = body["model"]
    gateway: Gateway = request.app.state.gateway
    stream = bool(body.get("stream"))
    try:
        wait = min(float(request.headers.get(WAIT_HEADER, "0") or 0), WAIT_MAX)
    except ValueError:
        return anthropic_error(400, f"{WAIT_HEADER} must be a number of seconds")
    try:
        attempts = (await gateway.wait_for_route(model, wait, kind="anthropic", path=PATH) if wait > 0
                    else gateway.attempts(model, kind="anthropic", path=PATH))
        attempt, response = await gateway.open(attempts, PATH, body, model=model, stream=stream,
                                               read_whole=not stream, surface="anthropic")
        request.state.gateway_attempt = attempt  # for the usage record
    except ModelNotFound:
        return anthropic_error(404, f"model: {model}")
    except Unavailable as error:
        return anthropic_error(503, error.detail, headers={"Retry-After": str(error.retry_after)})
    native = attempt.state.config.kind == "anthropic"
    if response.status_code in (401, 403) or response.status_code >= 400 or not stream:
        if stream:
            await response.aread()
            await response.aclose()
        if response.status_code in (401, 403):
            return anthropic_error(502, f"the backend {attempt.state.name} refused the gateway's credentials "
                                        f"(HTTP {response.status_code})")
        if response.status_code >= 400:
            if native:
                return Response(response.content, status_code=response.status_code, media_type="application/json")
            return anthropic_error(response.status_code, translate.error_message(response.content))
        if native:
            document = orjson.loads(response.content)
            document["model"] = model
            return Response(orjson.dumps(document), media_type="application/json")
        try:
            return Response(anthropic_messages.from_openai(response.content, model), media_type="application/json")
        except (ValueError, KeyError, IndexError, TypeError):
            return anthropic_error(502, f"the backend {attempt.state.name} sent an answer that is not OpenAI's shape")
    chunks = (_renamed(response.aiter_lines(), model) if native
              else anthropic_messages.stream_from_openai(response.aiter_lines(), model))
    return WatchedStreamingResponse(_guarded(gateway, attempt, response, chunks), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


def add_routes(router) -> None:
    @router.post(PATH, dependencies=[USE], tags=["anthropic"])
    async def messages(request: Request) -> Response:
        """Anthropic's Messages API; `"stream": true` answers with its Server-Sent Events."""
        body = await _body(request)
        if isinstance(body, JSONResponse):
            return body
        meter = await metering(request, "anthropic", PATH, body["model"])
        return meter.finish(await _answer(request, body))
