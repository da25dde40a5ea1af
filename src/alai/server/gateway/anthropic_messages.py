"""Anthropic's Messages API on the gateway: requests in Anthropic's shape answered by an
OpenAI-compatible chat API (an OpenAI-compatible backend, or Ollama's own /v1).

Requests: `system` and the messages (text blocks joined) become OpenAI messages;
`max_tokens`, `temperature`, `top_p`, `stop_sequences` → `stop`. Answers: a whole
message, or the SSE events the Anthropic clients expect (message_start,
content_block_start, content_block_delta per delta, content_block_stop,
message_delta with the stop reason and usage, message_stop); an upstream failure
becomes an `error` event. Tool use both ways for this direction: tools and tool_use /
tool_result blocks become OpenAI tools, tool_calls and `tool` messages, and the
answer's calls come back as tool_use blocks (streamed as input_json_delta); and the
other way for OpenAI/Ollama chats answered by Anthropic backends. Not translated
(yet): images.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson

from alai.server.gateway import translate

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


def _openai_messages(message: dict) -> list[dict]:
    """One Anthropic message as OpenAI messages: tool_use blocks become the assistant's
    tool_calls, tool_result blocks become `tool` messages (before the user's text)."""
    role, content = message.get("role", "user"), message.get("content")
    if not isinstance(content, list):
        return [{"role": role, "content": _text(content)}]
    out: list[dict] = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            result = block.get("content")
            out.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""),
                        "content": result if isinstance(result, str) else _text(result)})
    calls = [{"id": block.get("id", ""), "type": "function",
              "function": {"name": block.get("name", ""), "arguments": orjson.dumps(block.get("input", {})).decode()}}
             for block in content if isinstance(block, dict) and block.get("type") == "tool_use"]
    text = _text(content)
    if calls:
        out.append({"role": "assistant", "content": text or None, "tool_calls": calls})
    elif text or not out:
        out.append({"role": role, "content": text})
    return out


def to_openai(body: dict, upstream_model: str) -> dict:
    messages = []
    if body.get("system"):
        messages.append({"role": "system", "content": _text(body["system"])})
    for message in body.get("messages") or []:
        messages += _openai_messages(message)
    out: dict[str, Any] = {"model": upstream_model, "messages": messages, "stream": bool(body.get("stream"))}
    if body.get("tools"):
        out["tools"] = [{"type": "function", "function": {
            "name": tool.get("name", ""), "description": tool.get("description", ""),
            "parameters": tool.get("input_schema") or {"type": "object"}}} for tool in body["tools"]]
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
    message = choice.get("message") or {}
    blocks: list[dict] = [{"type": "text", "text": message["content"]}] if message.get("content") else []
    blocks += [{"type": "tool_use", "id": call.get("id") or f"toolu_{index}",
                "name": (call.get("function") or {}).get("name", ""),
                "input": _arguments((call.get("function") or {}).get("arguments"))}
               for index, call in enumerate(message.get("tool_calls") or [])]
    return orjson.dumps({
        "id": _message_id(), "type": "message", "role": "assistant", "model": model,
        "content": blocks or [{"type": "text", "text": ""}],
        "stop_reason": STOP_REASONS.get(choice.get("finish_reason"), "end_turn"), "stop_sequence": None,
        "usage": {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0)}})


def _arguments(text: Any) -> dict:
    if isinstance(text, dict):
        return text
    try:
        parsed = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": text}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


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
    blocks: dict[int, int] = {}  # OpenAI tool call index -> Anthropic content block index
    async for chunk in translate.openai_chunks(lines):
        if chunk is None:
            break
        if (problem := translate.chunk_error(chunk)) is not None:
            yield _event("error", error_body(502, problem))
            return
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                yield _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                     "delta": {"type": "text_delta", "text": delta}})
            for fragment in (choice.get("delta") or {}).get("tool_calls") or []:
                position = fragment.get("index", 0)
                function = fragment.get("function") or {}
                if position not in blocks:  # a new call: close the block before, open a tool_use block
                    previous = max(blocks.values(), default=0)
                    yield _event("content_block_stop", {"type": "content_block_stop", "index": previous})
                    blocks[position] = previous + 1
                    yield _event("content_block_start", {"type": "content_block_start", "index": blocks[position],
                                                         "content_block": {"type": "tool_use",
                                                                           "id": fragment.get("id") or
                                                                           f"toolu_{position}",
                                                                           "name": function.get("name", ""),
                                                                           "input": {}}})
                if function.get("arguments"):
                    yield _event("content_block_delta", {"type": "content_block_delta", "index": blocks[position],
                                                         "delta": {"type": "input_json_delta",
                                                                   "partial_json": function["arguments"]}})
            finish = choice.get("finish_reason") or finish
    else:
        yield _event("error", error_body(502, "the backend ended the answer early"))
        return
    yield _event("content_block_stop", {"type": "content_block_stop", "index": max(blocks.values(), default=0)})
    yield _event("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": STOP_REASONS.get(finish, "end_turn"),
                                             "stop_sequence": None},
                                   "usage": {"input_tokens": usage.get("prompt_tokens", 0),
                                             "output_tokens": usage.get("completion_tokens", 0)}})
    yield _event("message_stop", {"type": "message_stop"})


# -- the other way: an OpenAI-style chat answered by an Anthropic backend ---------------------

DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI and Ollama requests often omit it
FINISH_REASONS = {"end_turn": "stop", "max_tokens": "length", "stop_sequence": "stop", "tool_use": "tool_calls"}


def from_openai_request(body: dict, upstream_model: str) -> dict:
    """An OpenAI chat request as an Anthropic Messages request."""
    system = "\n".join(_text(m.get("content")) for m in body.get("messages") or [] if m.get("role") == "system")
    messages: list[dict] = []
    for m in body.get("messages") or []:
        role = m.get("role")
        if role == "system":
            continue
        if role == "tool":  # a tool's answer: a tool_result block in a user turn (merged with the next ones)
            block = {"type": "tool_result", "tool_use_id": m.get("tool_call_id", ""), "content": _text(m.get("content"))}
            if messages and messages[-1]["role"] == "user" and isinstance(messages[-1]["content"], list):
                messages[-1]["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block]})
            continue
        if role == "assistant" and m.get("tool_calls"):
            blocks: list[dict] = [{"type": "text", "text": _text(m.get("content"))}] if m.get("content") else []
            blocks += [{"type": "tool_use", "id": call.get("id", ""),
                        "name": (call.get("function") or {}).get("name", ""),
                        "input": _arguments((call.get("function") or {}).get("arguments"))}
                       for call in m["tool_calls"]]
            messages.append({"role": "assistant", "content": blocks})
            continue
        text = _text(m.get("content"))
        if messages and messages[-1]["role"] == "user" and isinstance(messages[-1]["content"], list) \
                and role != "assistant":
            messages[-1]["content"].append({"type": "text", "text": text})
        else:
            messages.append({"role": "assistant" if role == "assistant" else "user", "content": text})
    out: dict[str, Any] = {"model": upstream_model, "messages": messages, "stream": bool(body.get("stream")),
                           "max_tokens": body.get("max_tokens") or body.get("max_completion_tokens")
                           or DEFAULT_MAX_TOKENS}
    if system:
        out["system"] = system
    for source, target in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
        if body.get(source) is not None:
            out[target] = body[source]
    if body.get("stop"):
        out["stop_sequences"] = body["stop"] if isinstance(body["stop"], list) else [body["stop"]]
    if body.get("tools"):
        out["tools"] = [{"name": (tool.get("function") or {}).get("name", ""),
                         "description": (tool.get("function") or {}).get("description", ""),
                         "input_schema": (tool.get("function") or {}).get("parameters") or {"type": "object"}}
                        for tool in body["tools"] if tool.get("type", "function") == "function"]
    return out


def to_openai_response(content: bytes, model: str) -> bytes:
    """An Anthropic message as an OpenAI chat.completion."""
    document = orjson.loads(content)
    text = "".join(block.get("text", "") for block in document.get("content") or [] if block.get("type") == "text")
    usage = document.get("usage") or {}
    message: dict[str, Any] = {"role": "assistant", "content": text}
    calls = [{"id": block.get("id", ""), "type": "function",
              "function": {"name": block.get("name", ""), "arguments": orjson.dumps(block.get("input", {})).decode()}}
             for block in document.get("content") or [] if block.get("type") == "tool_use"]
    if calls:
        message["tool_calls"] = calls
        message["content"] = text or None
    return orjson.dumps({
        "id": "chatcmpl-" + str(document.get("id", "")).removeprefix("msg_"), "object": "chat.completion",
        "created": 0, "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": FINISH_REASONS.get(document.get("stop_reason"), "stop")}],
        "usage": {"prompt_tokens": usage.get("input_tokens", 0), "completion_tokens": usage.get("output_tokens", 0),
                  "total_tokens": usage.get("input_tokens", 0) + usage.get("output_tokens", 0)}})


async def openai_sse_from_anthropic(lines: AsyncIterator[str], model: str) -> AsyncIterator[str]:
    """Anthropic's SSE events as OpenAI's SSE lines (`data: {chunk}`, blank separators,
    `data: [DONE]`); an Anthropic `error` event becomes a `data: {"error": …}` line."""
    input_tokens, output_tokens, finish = 0, 0, None
    tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index

    def chunk(choices: list, **extra) -> str:
        return "data: " + orjson.dumps({"id": "chatcmpl-anthropic", "object": "chat.completion.chunk", "created": 0,
                                        "model": model, "choices": choices, **extra}).decode()

    async for line in lines:
        if not line.startswith("data:"):
            continue
        try:
            event = orjson.loads(line[5:])
        except orjson.JSONDecodeError:
            continue
        kind = event.get("type")
        if kind == "message_start":
            input_tokens = ((event.get("message") or {}).get("usage") or {}).get("input_tokens", 0)
        elif kind == "content_block_delta" and (event.get("delta") or {}).get("type") == "text_delta":
            yield chunk([{"index": 0, "delta": {"content": event["delta"].get("text", "")}, "finish_reason": None}])
            yield ""
        elif kind == "content_block_start" and (event.get("content_block") or {}).get("type") == "tool_use":
            block = event["content_block"]
            tools[event.get("index", 0)] = len(tools)
            yield chunk([{"index": 0, "finish_reason": None, "delta": {"tool_calls": [{
                "index": tools[event.get("index", 0)], "id": block.get("id", ""), "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""}}]}}])
            yield ""
        elif kind == "content_block_delta" and (event.get("delta") or {}).get("type") == "input_json_delta":
            yield chunk([{"index": 0, "finish_reason": None, "delta": {"tool_calls": [{
                "index": tools.get(event.get("index", 0), 0),
                "function": {"arguments": event["delta"].get("partial_json", "")}}]}}])
            yield ""
        elif kind == "message_delta":
            finish = FINISH_REASONS.get((event.get("delta") or {}).get("stop_reason"), "stop")
            output_tokens = (event.get("usage") or {}).get("output_tokens", output_tokens)
        elif kind == "error":
            message = (event.get("error") or {}).get("message", "the backend failed")
            yield "data: " + orjson.dumps({"error": {"message": message, "type": "upstream_error"}}).decode()
            yield ""
            return
        elif kind == "message_stop":
            yield chunk([{"index": 0, "delta": {}, "finish_reason": finish or "stop"}])
            yield ""
            yield chunk([], usage={"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                                   "total_tokens": input_tokens + output_tokens})
            yield ""
            yield "data: [DONE]"
            yield ""
            return
    # No message_stop: let the reader see an early end (translate.stream reports it).
