"""Choosing a route for a model and forwarding to it, with failover before the first byte.

A request's routes are tried in order, skipping backends known to be down. A connect
error or timeout marks the backend down and the next route is tried; a 5xx is tried
elsewhere too; a 4xx (e.g. Ollama's 404 "model not found") is the answer: it would be
the same anywhere, and the cloud is not for models that do not exist. Nothing reaches
the client until a route has answered; once a stream has begun, an upstream failure
is reported in the stream (an `{"error": …}` line), never as a clean end.

Ollama requests go to Ollama backends as they are, and to OpenAI-compatible backends
translated (gateway/translate.py: chat, generate, embeddings); routes to Anthropic
backends are skipped for Ollama requests (not translated yet).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import orjson

from alai.server.gateway import anthropic_messages, translate
from alai.server.gateway.backends import Backends, BackendState, describe, headers_for
from alai.server.gateway.config import GatewayConfig
from alai.server.gateway.upstream import Upstream, UpstreamResponse

PAUSE_RETRY_AFTER = 30


@dataclass(frozen=True)
class Attempt:
    state: BackendState
    upstream_model: str


class ModelNotFound(Exception):
    def __init__(self, model: str) -> None:
        super().__init__(f"model '{model}' not found")
        self.model = model


class Unavailable(Exception):
    """No route can answer now; `paused` when that is the model's policy (or its only
    home is down) rather than a failure of every fallback."""

    def __init__(self, model: str, *, paused: bool, retry_after: int, detail: str) -> None:
        super().__init__(detail)
        self.model, self.paused, self.retry_after, self.detail = model, paused, retry_after, detail


@dataclass(eq=False)
class Gateway:
    config: GatewayConfig
    backends: Backends
    client: httpx.AsyncClient  # health checks and look-ups (/api/version, /api/ps)
    upstream: Upstream  # model requests

    def attempts(self, model: str, *, kind: str = "ollama", path: str | None = None) -> list[Attempt]:
        """The routes to try for `model`, in order; raises ModelNotFound or Unavailable.

        Routes to backends of another protocol count when the request can be translated
        (an Ollama chat, generate or embedding request for an OpenAI-compatible backend)."""
        states = self.backends.states
        configured = self.config.models.get(model)
        if configured is not None:
            routes = [Attempt(states[route.backend], route.model or model) for route in configured.routes
                      if self._speaks(states[route.backend].config.kind, kind, path)]
            if not routes:  # none of its routes can answer this kind of request: as if it did not exist
                raise ModelNotFound(model)
            usable = [attempt for attempt in routes if attempt.state.usable]
            if usable:
                return usable
            down = ", ".join(f"{a.state.name} ({a.state.reason or 'down'})" for a in routes)
            if configured.when_down == "pause":
                raise Unavailable(model, paused=True, retry_after=configured.retry_after_seconds,
                                  detail=f"model '{model}' is paused: its backend is down: {down}")
            raise Unavailable(model, paused=False, retry_after=configured.retry_after_seconds,
                              detail=f"model '{model}': no backend is up: {down}")
        usable = [Attempt(state, model) for state in states.values()
                  if self._speaks(state.config.kind, kind, path) and state.usable and state.has_model(model)]
        if usable:
            return usable
        away = [state for state in states.values() if not state.usable and state.has_model(model)]
        if away:
            names = ", ".join(f"{state.name} ({state.reason or 'down'})" for state in away)
            raise Unavailable(model, paused=True, retry_after=PAUSE_RETRY_AFTER,
                              detail=f"model '{model}' is paused: the backend that has it is down: {names}")
        raise ModelNotFound(model)

    @staticmethod
    def _speaks(backend_kind: str, kind: str, path: str | None) -> bool:
        if backend_kind == "anthropic" and kind != "anthropic":  # chats only, translated
            return path is None or path in ("/api/chat", "/api/generate", "/v1/chat/completions")
        if kind == "openai":  # Ollama serves the OpenAI API too (/v1/chat/completions …)
            return backend_kind in ("openai", "ollama")
        if kind == "anthropic":  # natively, or translated to an OpenAI-style chat (anthropic_messages.py)
            return True
        return backend_kind == kind or (backend_kind == "openai" and (path is None or path in translate.TRANSLATABLE))

    async def wait_for_route(self, model: str, seconds: float, *, kind: str = "ollama",
                             path: str | None = None) -> list[Attempt]:
        """As `attempts`, waiting up to `seconds` for a paused model's backend to return."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            try:
                return self.attempts(model, kind=kind, path=path)
            except Unavailable:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
            await asyncio.sleep(0.25)

    async def open(self, attempts: list[Attempt], path: str, body: dict, *, model: str, stream: bool,
                   read_whole: bool, surface: str = "ollama") -> tuple[Attempt, UpstreamResponse]:
        """The first route that answers (status < 500), its response open (or read, with
        `read_whole`, so that a failure half-way can still go to the next route)."""
        failures = []
        for attempt in attempts:
            config = attempt.state.config
            if surface == "anthropic":
                if config.kind == "anthropic":
                    upstream_path, payload = path, {**body, "model": attempt.upstream_model}
                else:
                    upstream_path = "/v1/chat/completions"
                    payload = anthropic_messages.to_openai(body, attempt.upstream_model)
            elif config.kind == "anthropic":  # an OpenAI-style chat (the Ollama one first made so)
                chat = body if surface == "openai" else translate.request(path, body, attempt.upstream_model,
                                                                          stream=stream)[1]
                upstream_path, payload = "/v1/messages", anthropic_messages.from_openai_request(
                    chat, attempt.upstream_model)
            elif surface == "openai" or config.kind == "ollama":
                upstream_path, payload = path, {**body, "model": attempt.upstream_model}
            else:
                upstream_path, payload = translate.request(path, body, attempt.upstream_model, stream=stream)
            try:
                response = await self.upstream.post(
                    config.url + upstream_path, orjson.dumps(payload),
                    {"Content-Type": "application/json", **headers_for(config)},
                    connect_timeout=config.connect_timeout_seconds, read_timeout=config.read_timeout_seconds)
                if response.status_code >= 500:
                    text = (await response.aread())[:200].decode(errors="replace")
                    await response.aclose()
                    failures.append(f"{attempt.state.name} answered {response.status_code} {text}")
                    continue
                if read_whole:
                    await response.aread()
                    await response.aclose()
            except (httpx.TransportError, httpx.TimeoutException) as error:
                self.backends.mark_down(attempt.state, error)
                failures.append(f"{attempt.state.name} {describe(error)}")
                continue
            return attempt, response
        configured = self.config.models.get(model)
        raise Unavailable(model, paused=False, retry_after=configured.retry_after_seconds if configured else 5,
                          detail=f"model '{model}': every route failed: {'; '.join(failures)}")

    async def relay_openai_from_anthropic(self, attempt: Attempt, response: UpstreamResponse,
                                          model: str) -> AsyncIterator[bytes]:
        """An Anthropic backend's SSE events as OpenAI's SSE chunks."""
        try:
            async for line in anthropic_messages.openai_sse_from_anthropic(response.aiter_lines(), model):
                yield line.encode() + b"\n"
        except (httpx.TransportError, httpx.TimeoutException) as error:
            self.backends.mark_down(attempt.state, error)
            message = f"the backend {attempt.state.name} failed during the answer: {describe(error)}"
            yield b"data: " + orjson.dumps({"error": {"message": message, "type": "upstream_error"}}) + b"\n\n"
        finally:
            await response.aclose()

    async def relay(self, attempt: Attempt, response: UpstreamResponse, model: str, *, sse: bool = False,
                    usage_sink: dict | None = None) -> AsyncIterator[bytes]:
        """The upstream body chunk by chunk as it comes (NDJSON lines, or SSE `data:` lines,
        re-labelled with the name asked for when the route renames the model); a failure
        half-way becomes an `{"error": …}` line (an SSE `data:` event with `sse`).

        `usage_sink`: the gateway asked an OpenAI-style backend for a usage chunk the client
        did not ask for; it is taken out of the stream and its counts put in the sink."""
        rename = attempt.upstream_model != model
        try:
            if not rename and usage_sink is None:
                async for chunk in response.aiter_bytes():  # decoded: we do not pass Content-Encoding on
                    yield chunk
            elif sse:
                skip_blank = False
                async for line in response.aiter_lines():
                    data = line[5:].strip() if line.startswith("data:") else None
                    if skip_blank and not line:
                        skip_blank = False
                        continue
                    if data and data != "[DONE]":
                        if usage_sink is not None and '"usage"' in data:
                            try:
                                chunk = orjson.loads(data)
                            except orjson.JSONDecodeError:
                                chunk = {}
                            if isinstance(chunk, dict) and chunk.get("usage") and not chunk.get("choices"):
                                usage_sink.update(chunk["usage"])
                                skip_blank = True
                                continue
                        if rename:
                            line = "data: " + relabel(data, model).decode()
                    yield line.encode() + b"\n"
            else:
                async for line in response.aiter_lines():
                    if line:
                        yield relabel(line, model) + b"\n"
        except (httpx.TransportError, httpx.TimeoutException) as error:
            self.backends.mark_down(attempt.state, error)
            message = f"the backend {attempt.state.name} failed during the answer: {describe(error)}"
            if sse:
                yield b"data: " + orjson.dumps({"error": {"message": message, "type": "upstream_error"}}) + b"\n\n"
            else:
                yield orjson.dumps({"error": message}) + b"\n"
        finally:
            await response.aclose()


    async def relay_translated(self, attempt: Attempt, response: UpstreamResponse, path: str, model: str,
                               started: float) -> AsyncIterator[bytes]:
        """An OpenAI-compatible (or Anthropic) backend's SSE stream as Ollama's NDJSON."""
        lines = response.aiter_lines()
        if attempt.state.config.kind == "anthropic":
            lines = anthropic_messages.openai_sse_from_anthropic(lines, model)
        try:
            async for line in translate.stream(path, lines, model, started):
                yield line
        except (httpx.TransportError, httpx.TimeoutException) as error:
            self.backends.mark_down(attempt.state, error)
            yield orjson.dumps({"error": f"the backend {attempt.state.name} failed during the answer: "
                                         f"{describe(error)}"}) + b"\n"
        finally:
            await response.aclose()


MODEL_NAME_MAX = 300
MAX_BODY_BYTES = 64 * 1024 * 1024  # images travel base64-encoded inside the JSON


async def read_limited(request) -> bytes | None:
    """A request's body, or None when it is larger than MAX_BODY_BYTES (refused from its
    declared length before any of it is read); the surfaces answer that in their shapes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            return None
    return bytes(raw)


def request_problem(body: dict) -> str | None:
    """What is wrong with a request's shape before any route sees it (None: nothing), so
    that translation never meets a shape it cannot handle and usage records stay storable."""
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        return "model is required"
    if len(model) > MODEL_NAME_MAX or any(ord(char) < 32 for char in model):
        return "model must be a name of at most 300 characters, without control characters"
    messages = body.get("messages")
    if messages is not None and (not isinstance(messages, list)
                                 or not all(isinstance(message, dict) for message in messages)):
        return "messages must be a list of objects"
    return None


def relabel(line: str | bytes, model: str) -> bytes:
    """One JSON document with its `model` set to `model` (unchanged if it is not JSON)."""
    try:
        document = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line.encode() if isinstance(line, str) else line
    if isinstance(document, dict) and "model" in document:
        document["model"] = model
    return orjson.dumps(document)
