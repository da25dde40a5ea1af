"""The Ollama-compatible surface at the server's root: what scripts written for
`http://localhost:11434` call (through `alai start`'s local proxy, which adds the token).

Answers as Ollama does: `{"error": "…"}` bodies with Ollama's status codes, NDJSON
streams (`application/x-ndjson`) unless `"stream": false`.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson
from fastapi import Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from alai.server.deps import api_router, require_scope
from alai.server.gateway import anthropic_messages, translate
from alai.server.gateway.backends import headers_for
from alai.server.gateway.proxy import (
    MAX_BODY_BYTES,
    Gateway,
    ModelNotFound,
    Unavailable,
    read_limited,
    relabel,
    request_problem,
)
from alai.server.gateway.usage import metering
from alai.server.streaming_response import WatchedStreamingResponse

USE = Depends(require_scope("gateway:use"))
VERSION_FALLBACK = "0.12.0"
# A client may wait this long (header, seconds) for a paused model's backend to return.
WAIT_HEADER = "x-alai-wait-seconds"
WAIT_MAX = 600.0


def ollama_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def _body(request: Request) -> dict | JSONResponse:
    raw = await read_limited(request)
    if raw is None:
        return ollama_error(413, f"request body too large (at most {MAX_BODY_BYTES // (1024 * 1024)} MiB)")
    if not raw.strip():
        return ollama_error(400, "missing request body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return ollama_error(400, f"invalid JSON: {error}")
    if not isinstance(body, dict):
        return ollama_error(400, "the request body must be a JSON object")
    model = body.get("model") if "model" in body else body.get("name")  # /api/show also takes "name"
    body["model"] = model
    body.pop("name", None)
    problem = request_problem(body)
    if problem is not None:
        return ollama_error(400, problem)
    return body


async def _forward(request: Request, path: str, *, streams: bool) -> Response:
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    meter = await metering(request, "ollama", path, body["model"])
    return meter.finish(await _answer(request, path, body, streams=streams))


async def _answer(request: Request, path: str, body: dict, *, streams: bool) -> Response:
    model: str = body["model"]
    gateway = _gateway(request)
    stream = streams and body.get("stream", True) is not False
    try:
        wait = min(float(request.headers.get(WAIT_HEADER, "0") or 0), WAIT_MAX)
    except ValueError:
        return ollama_error(400, f"{WAIT_HEADER} must be a number of seconds")
    started = time.monotonic()
    try:
        attempts = (await gateway.wait_for_route(model, wait, path=path) if wait > 0
                    else gateway.attempts(model, path=path))
        attempt, response = await gateway.open(attempts, path, body, model=model, stream=stream,
                                               read_whole=not stream)
        request.state.gateway_attempt = attempt  # for the usage record
    except ModelNotFound as error:
        return ollama_error(404, str(error))
    except Unavailable as error:
        return ollama_error(503, error.detail, headers={"Retry-After": str(error.retry_after)})
    if response.status_code in (401, 403):  # the backend refused our key: not the client's fault
        await response.aread()
        await response.aclose()
        return ollama_error(502, f"the backend {attempt.state.name} refused the gateway's credentials "
                                 f"(HTTP {response.status_code}); check its api_key in the gateway configuration")
    if attempt.state.config.kind in ("openai", "anthropic"):
        return await _translated(gateway, attempt, response, path, model, stream=stream, started=started)
    if response.status_code >= 400 or not stream:
        if stream:  # an error answer to a streamed request: read it whole
            await response.aread()
            await response.aclose()
        content = response.content
        if attempt.upstream_model != model and response.status_code < 400:
            content = relabel(content, model)
        return Response(content, status_code=response.status_code,
                        media_type=response.headers.get("content-type", "application/json"))
    return WatchedStreamingResponse(gateway.relay(attempt, response, model), status_code=response.status_code,
                             media_type=response.headers.get("content-type", "application/x-ndjson"))


async def _translated(gateway: Gateway, attempt, response, path: str, model: str, *, stream: bool,
                      started: float) -> Response:
    """An OpenAI-compatible backend's answer in Ollama's shape."""
    if response.status_code >= 400 or not stream:
        if stream:
            await response.aread()
            await response.aclose()
        if response.status_code >= 400:
            return ollama_error(response.status_code, translate.error_message(response.content))
        try:
            content = response.content
            if attempt.state.config.kind == "anthropic":
                content = anthropic_messages.to_openai_response(content, model)
            return Response(translate.response(path, content, model, started), media_type="application/json")
        except (ValueError, KeyError, IndexError, TypeError):
            return ollama_error(502, f"the backend {attempt.state.name} sent an answer that is not OpenAI's shape")
    return WatchedStreamingResponse(gateway.relay_translated(attempt, response, path, model, started),
                             media_type="application/x-ndjson")


def add_routes(router) -> None:
    @router.get("/", dependencies=[USE], include_in_schema=False)
    async def root() -> PlainTextResponse:
        """What Ollama answers at its root (scripts use it to see whether it runs)."""
        return PlainTextResponse("Ollama is running")

    @router.head("/", dependencies=[USE], include_in_schema=False)
    async def root_head() -> Response:
        return Response(status_code=200)

    @router.get("/api/version", dependencies=[USE], tags=["ollama"])
    async def version(request: Request) -> JSONResponse:
        """The version of the first Ollama backend that is up."""
        gateway = _gateway(request)
        for state in gateway.backends.states.values():
            if state.config.kind == "ollama" and state.up:
                try:
                    answer = await gateway.client.get(state.config.url + "/api/version",
                                                      headers=headers_for(state.config), timeout=3.0)
                    return JSONResponse({"version": answer.json()["version"]})
                except (httpx.HTTPError, KeyError, ValueError):
                    continue
        return JSONResponse({"version": VERSION_FALLBACK})

    @router.get("/api/tags", dependencies=[USE], tags=["ollama"])
    async def tags(request: Request) -> JSONResponse:
        """The models of every Ollama backend that is up, and the configured model names."""
        gateway = _gateway(request)
        seen: dict[str, dict] = {}
        for state in gateway.backends.states.values():
            if state.config.kind == "ollama" and state.up:
                for entry in state.models:
                    seen.setdefault(entry.get("name"), entry)
        for name, configured in gateway.config.models.items():
            if name in seen:
                continue
            for route in configured.routes:
                state = gateway.backends.states[route.backend]
                if state.up and state.config.kind in ("ollama", "openai"):
                    upstream = route.model or name
                    found = next((e for e in state.models if e.get("name") in (upstream, f"{upstream}:latest")), {})
                    seen[name] = {"modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": "", "details": {},
                                  **found, "name": name, "model": name}
                    break
        return JSONResponse({"models": list(seen.values())})

    @router.get("/api/ps", dependencies=[USE], tags=["ollama"])
    async def running(request: Request) -> JSONResponse:
        """The models loaded now, on every Ollama backend that is up."""
        gateway = _gateway(request)
        states = [s for s in gateway.backends.states.values() if s.config.kind == "ollama" and s.up]

        async def one(state) -> list[dict]:
            try:
                answer = await gateway.client.get(state.config.url + "/api/ps", headers=headers_for(state.config),
                                                  timeout=3.0)
                return list(answer.json().get("models") or [])
            except (httpx.HTTPError, ValueError, AttributeError):
                return []

        found = await asyncio.gather(*(one(state) for state in states))
        return JSONResponse({"models": [entry for models in found for entry in models]})

    @router.post("/api/show", dependencies=[USE], tags=["ollama"])
    async def show(request: Request) -> Response:
        return await _forward(request, "/api/show", streams=False)

    @router.post("/api/chat", dependencies=[USE], tags=["ollama"])
    async def chat(request: Request) -> Response:
        """Chat, streamed as NDJSON unless "stream": false; routed, failed over, or paused."""
        return await _forward(request, "/api/chat", streams=True)

    @router.post("/api/generate", dependencies=[USE], tags=["ollama"])
    async def generate(request: Request) -> Response:
        return await _forward(request, "/api/generate", streams=True)

    @router.post("/api/embed", dependencies=[USE], tags=["ollama"])
    async def embed(request: Request) -> Response:
        return await _forward(request, "/api/embed", streams=False)

    @router.post("/api/embeddings", dependencies=[USE], tags=["ollama"])
    async def embeddings(request: Request) -> Response:
        return await _forward(request, "/api/embeddings", streams=False)


def router_factory():
    router = api_router()
    add_routes(router)
    return router
