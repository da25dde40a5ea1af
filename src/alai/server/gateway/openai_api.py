"""The OpenAI-compatible surface: `/v1/models`, `/v1/chat/completions` (SSE ending with
`data: [DONE]`), `/v1/embeddings` — for the `openai` client and tools that speak it.

Forwarded as it is to OpenAI-compatible backends and to Ollama backends (Ollama serves
the same API under /v1), routed, failed over and paused like the Ollama surface.
Errors in OpenAI's shape: `{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

import orjson
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, Response

from alai.server.deps import require_scope
from alai.server.gateway import anthropic_messages, translate
from alai.server.gateway.ollama_api import WAIT_HEADER, WAIT_MAX
from alai.server.gateway.proxy import Gateway, ModelNotFound, Unavailable, read_limited, relabel, request_problem
from alai.server.gateway.usage import metering
from alai.server.streaming_response import WatchedStreamingResponse

USE = Depends(require_scope("gateway:use"))


def openai_error(status: int, message: str, kind: str, code: str | None = None,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}},
                        status_code=status, headers=headers)


async def _body(request: Request) -> dict | JSONResponse:
    raw = await read_limited(request)
    if raw is None:
        return openai_error(413, "the request body is too large", "invalid_request_error")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return openai_error(400, "We could not parse the JSON body of your request.", "invalid_request_error")
    if not isinstance(body, dict):
        return openai_error(400, "the request body must be a JSON object", "invalid_request_error")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return openai_error(400, "you must provide a model parameter", "invalid_request_error")
    problem = request_problem(body)
    if problem is not None:
        return openai_error(400, problem, "invalid_request_error")
    return body


async def _forward(request: Request, path: str) -> Response:
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    meter = await metering(request, "openai", path, body["model"])
    return meter.finish(await _answer(request, path, body))


async def _answer(request: Request, path: str, body: dict) -> Response:
    model: str = body["model"]
    gateway: Gateway = request.app.state.gateway
    stream = bool(body.get("stream"))
    # Streams carry token counts only when asked: ask on the client's behalf (for usage and
    # cost), and take that extra chunk out again if the client did not ask for it.
    usage_sink = None
    if stream and path == "/v1/chat/completions" and not (body.get("stream_options") or {}).get("include_usage"):
        body = {**body, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
        usage_sink = request.state.gateway_usage_tokens = {}
    try:
        wait = min(float(request.headers.get(WAIT_HEADER, "0") or 0), WAIT_MAX)
    except ValueError:
        return openai_error(400, f"{WAIT_HEADER} must be a number of seconds", "invalid_request_error")
    try:
        attempts = (await gateway.wait_for_route(model, wait, kind="openai", path=path) if wait > 0
                    else gateway.attempts(model, kind="openai", path=path))
        attempt, response = await gateway.open(attempts, path, body, model=model, stream=stream,
                                               read_whole=not stream, surface="openai")
        request.state.gateway_attempt = attempt  # for the usage record
    except ModelNotFound:
        return openai_error(404, f"The model `{model}` does not exist or you do not have access to it.",
                            "invalid_request_error", "model_not_found")
    except Unavailable as error:
        return openai_error(503, error.detail, "service_unavailable", "model_paused" if error.paused else None,
                            headers={"Retry-After": str(error.retry_after)})
    if response.status_code in (401, 403):
        await response.aread()
        await response.aclose()
        return openai_error(502, f"the backend {attempt.state.name} refused the gateway's credentials "
                                 f"(HTTP {response.status_code})", "upstream_error")
    if attempt.state.config.kind == "anthropic":
        return await _from_anthropic(gateway, attempt, response, model, stream=stream)
    if response.status_code >= 400 or not stream:
        if stream:
            await response.aread()
            await response.aclose()
        content = response.content
        if attempt.upstream_model != model and response.status_code < 400:
            content = relabel(content, model)
        return Response(content, status_code=response.status_code,
                        media_type=response.headers.get("content-type", "application/json"))
    return WatchedStreamingResponse(gateway.relay(attempt, response, model, sse=True, usage_sink=usage_sink),
                             status_code=response.status_code,
                             media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def _from_anthropic(gateway: Gateway, attempt, response, model: str, *, stream: bool) -> Response:
    """An Anthropic backend's answer in OpenAI's shape."""
    if response.status_code >= 400 or not stream:
        if stream:
            await response.aread()
            await response.aclose()
        if response.status_code >= 400:
            return openai_error(response.status_code, translate.error_message(response.content), "upstream_error")
        return Response(anthropic_messages.to_openai_response(response.content, model),
                        media_type="application/json")
    return WatchedStreamingResponse(gateway.relay_openai_from_anthropic(attempt, response, model),
                             media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def add_routes(router) -> None:
    @router.get("/v1/models", dependencies=[USE], tags=["openai"])
    async def models(request: Request) -> JSONResponse:
        """Every model a backend that is up offers, and the configured names."""
        gateway: Gateway = request.app.state.gateway
        seen: dict[str, str] = {}
        for state in gateway.backends.states.values():
            if state.up and state.config.kind in ("ollama", "openai"):
                for entry in state.models:
                    if entry.get("name"):
                        seen.setdefault(entry["name"], state.name)
        for name in gateway.config.models:
            try:
                seen.setdefault(name, gateway.attempts(name, kind="openai")[0].state.name)
            except (ModelNotFound, Unavailable):
                continue
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                                         "owned_by": owner} for name, owner in seen.items()]})

    @router.post("/v1/chat/completions", dependencies=[USE], tags=["openai"])
    async def chat_completions(request: Request) -> Response:
        """Chat completions, streamed as Server-Sent Events with `"stream": true`."""
        return await _forward(request, "/v1/chat/completions")

    @router.post("/v1/embeddings", dependencies=[USE], tags=["openai"])
    async def embeddings(request: Request) -> Response:
        return await _forward(request, "/v1/embeddings")
