"""Anthropic's Messages API on the gateway: requests in Anthropic's shape answered by an
OpenAI-compatible chat API (an OpenAI-compatible backend, or Ollama's own /v1).

Requests: `system` and the messages (text blocks joined) become OpenAI messages;
`max_tokens`, `temperature`, `top_p`, `stop_sequences` → `stop`. Answers: a whole
message, or the SSE events the Anthropic clients expect (message_start,
content_block_start, content_block_delta per delta, content_block_stop,
message_delta with the stop reason and usage, message_stop); an upstream failure
becomes an `error` event. Not translated (yet): tool use, images.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "content_filter": "end_turn"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"}


def error_body(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message}}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(block.get("text", "") for block in content if isinstance(block, dict)
                       and block.get("type") == "text")
    return ""


def to_openai(body: dict, upstream_model: str) -> dict:
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text(body["system"])})
    messages += [{"role": m.get("role", "user"), "content": _text(m.get("content"))} for m in body.get("messages") or []]
    out: dict[str, Any] = {"model": upstream_model, "messages": messages, "stream": bool(body.get("stream"))}
    for source, target in (("max_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                           ("stop_sequences", "stop")):
        if body.get(source) is not None:
            out[target] = body[source]
    if out["stream"]:
        out["stream_options"] = {"include_usage": True}
    return out


def _message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def from_openai(content: bytes, model: str) -> bytes:
    document = orjson.loads(content)
    choice = document["choices"][0]
    usage = document.get("usage") or {}
    return orjson.dumps({
        "id": _message_id(), "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": (choice.get("message") or {}).get("content") or ""}],
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason"), "end_turn"), "stop_sequence": None,
        "usage": {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0)}})


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


async def stream_from_openai(lines: AsyncIterator[str], model: str) -> AsyncIterator[bytes]:
    """OpenAI's SSE chunks as Anthropic's SSE events."""
    yield _event("message_start", {"type": "message_start", "message": {
        "id": _message_id(), "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})
    yield _event("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "text", "text": ""}})
    finish, usage = None, {}
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if chunk.get("error"):
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            yield _event("error", error_body(502, message or "the backend failed"))
            return
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                yield _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": delta}})
            finish = choice.get("finish_reason") or finish
    else:
        yield _event("error", error_body(502, "the backend ended the answer early"))
        return
    yield _event("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield _event("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": STOP_REASONS.get(finish, "end_turn"),
                                             "stop_sequence": None},
                                   "usage": {"output_tokens": usage.get("completion_tokens", 0)}})
    yield _event("message_stop", {"type": "message_stop"})
