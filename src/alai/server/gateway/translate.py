"""Ollama requests answered by an OpenAI-compatible backend (Together.ai and the like).

Requests: `/api/chat` and `/api/generate` become `/v1/chat/completions` (options mapped:
temperature, top_p, top_k, seed, stop, num_predict → max_tokens; `format: json` →
`response_format`), `/api/embed` and `/api/embeddings` become `/v1/embeddings`.
Answers come back in Ollama's shape: NDJSON lines from the SSE stream as each delta
arrives, the last one `done` with the token counts; whole JSON for `stream: false`;
`{"error": …}` with the upstream status for errors. Tool calls both ways (function
tools: the same shape; OpenAI's JSON-text arguments become Ollama's objects, streamed
fragments are joined). Not translated (yet): images.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson

TRANSLATABLE = {"/api/chat", "/api/generate", "/api/embed", "/api/embeddings"}
OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "seed": "seed", "stop": "stop",
           "num_predict": "max_tokens", "frequency_penalty": "frequency_penalty",
           "presence_penalty": "presence_penalty"}


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _messages(path: str, body: dict) -> list[dict]:
    if path == "/api/chat":
        return _chat_messages(body.get("messages") or [])
    messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
    return [*messages, {"role": "user", "content": body.get("prompt", "")}]


def _chat_messages(messages: list[dict]) -> list[dict]:
    """Ollama's chat messages in OpenAI's terms. Tool calls: Ollama gives them no ids, so
    each gets `call_<n>` and the tool answers that follow take those ids in order."""
    out, pending, counter = [], [], 0
    for message in messages:
        role = message.get("role", "user")
        converted: dict[str, Any] = {"role": role, "content": message.get("content", "")}
        if role == "assistant" and message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = call.get("function") or {}
                arguments = function.get("arguments", {})
                call_id = call.get("id") or f"call_{counter}"
                counter += 1
                calls.append({"id": call_id, "type": "function", "function": {
                    "name": function.get("name", ""),
                    "arguments": arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode()}})
                pending.append(call_id)
            converted["tool_calls"] = calls
        elif role == "tool":
            converted["tool_call_id"] = message.get("tool_call_id") or (pending.pop(0) if pending else "call_0")
        out.append(converted)
    return out


def _ollama_tool_calls(calls: list[dict]) -> list[dict]:
    """OpenAI tool calls (arguments as JSON text) as Ollama's (arguments as an object)."""
    out = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            parsed = orjson.loads(arguments) if isinstance(arguments, str) else arguments
        except orjson.JSONDecodeError:
            parsed = {"_raw": arguments}
        out.append({"function": {"name": function.get("name", ""), "arguments": parsed}})
    return out


def request(path: str, body: dict, upstream_model: str, *, stream: bool) -> tuple[str, dict]:
    """(OpenAI path, OpenAI body) for an Ollama request."""
    if path in ("/api/embed", "/api/embeddings"):
        text = body.get("input") if path == "/api/embed" else body.get("prompt", "")
        return "/v1/embeddings", {"model": upstream_model, "input": text}
    out: dict[str, Any] = {"model": upstream_model, "messages": _messages(path, body), "stream": stream}
    for source, target in OPTIONS.items():
        if (body.get("options") or {}).get(source) is not None:
            out[target] = body["options"][source]
    if body.get("format") == "json":
        out["response_format"] = {"type": "json_object"}
    if body.get("tools"):  # the same function-tool shape on both sides
        out["tools"] = body["tools"]
    if stream:
        out["stream_options"] = {"include_usage": True}
    return "/v1/chat/completions", out


def _ollama_chunk(path: str, model: str, content: str, done: bool) -> dict:
    if path == "/api/chat":
        return {"model": model, "created_at": now(), "message": {"role": "assistant", "content": content},
                "done": done}
    return {"model": model, "created_at": now(), "response": content, "done": done}


def _final(path: str, model: str, content: str, finish: str | None, usage: dict | None, started: float) -> dict:
    final = _ollama_chunk(path, model, content, True)
    elapsed = int((time.monotonic() - started) * 1e9)
    final.update({"done_reason": finish or "stop", "total_duration": elapsed, "load_duration": 0,
                  "prompt_eval_count": (usage or {}).get("prompt_tokens", 0),
                  "eval_count": (usage or {}).get("completion_tokens", 0), "eval_duration": elapsed})
    return final


def error_message(content: bytes) -> str:
    """An OpenAI-style error body's message (or the body itself, shortened)."""
    try:
        document = orjson.loads(content)
        error = document.get("error") if isinstance(document, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except orjson.JSONDecodeError:
        pass
    return content[:300].decode(errors="replace")


def response(path: str, content: bytes, model: str, started: float) -> bytes:
    """A whole OpenAI answer as Ollama's."""
    document = orjson.loads(content)
    if path == "/api/embed":
        return orjson.dumps({"model": model, "embeddings": [item["embedding"] for item in document["data"]],
                             "prompt_eval_count": (document.get("usage") or {}).get("prompt_tokens", 0)})
    if path == "/api/embeddings":
        return orjson.dumps({"embedding": document["data"][0]["embedding"]})
    choice = document["choices"][0]
    message = choice.get("message") or {}
    final = _final(path, model, message.get("content") or "", choice.get("finish_reason"), document.get("usage"),
                   started)
    if message.get("tool_calls") and path == "/api/chat":
        final["message"]["tool_calls"] = _ollama_tool_calls(message["tool_calls"])
        final["done_reason"] = "stop"  # Ollama ends a tool-calling turn with "stop"
    return orjson.dumps(final)


async def openai_chunks(lines: AsyncIterator[str]) -> AsyncIterator[dict | None]:
    """The JSON chunks of an OpenAI SSE stream (lines that are not JSON objects skipped),
    then None for `data: [DONE]`; a stream that was cut short ends without the None."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            yield None
            return
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            yield chunk


def chunk_error(chunk: dict) -> str | None:
    """The message of an error chunk (`{"error": {...}}` or `{"error": "…"}`), else None."""
    error = chunk.get("error")
    if not error:
        return None
    message = error.get("message") if isinstance(error, dict) else str(error)
    return message or "the backend failed"


async def stream(path: str, lines: AsyncIterator[str], model: str, started: float) -> AsyncIterator[bytes]:
    """OpenAI's SSE (`data: {…}` … `data: [DONE]`) as Ollama's NDJSON, delta by delta."""
    finish, usage = None, None
    calls: dict[int, dict] = {}  # tool calls come in fragments, by index
    async for chunk in openai_chunks(lines):
        if chunk is None:
            break
        if (problem := chunk_error(chunk)) is not None:
            yield orjson.dumps({"error": problem}) + b"\n"
            return
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                yield orjson.dumps(_ollama_chunk(path, model, delta, False)) + b"\n"
            for fragment in (choice.get("delta") or {}).get("tool_calls") or []:
                call = calls.setdefault(fragment.get("index", 0), {"function": {"name": "", "arguments": ""}})
                function = fragment.get("function") or {}
                call["function"]["name"] += function.get("name") or ""
                call["function"]["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    else:
        # The stream ended without [DONE]: an honest error, not a clean end.
        yield orjson.dumps({"error": "the backend ended the answer early"}) + b"\n"
        return
    if calls and path == "/api/chat":  # as Ollama does: the calls in one message before the last line
        message = _ollama_chunk(path, model, "", False)
        message["message"]["tool_calls"] = _ollama_tool_calls([calls[index] for index in sorted(calls)])
        yield orjson.dumps(message) + b"\n"
        finish = "stop"
    yield orjson.dumps(_final(path, model, "", finish, usage, started)) + b"\n"
