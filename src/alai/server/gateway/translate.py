"""Ollama requests answered by an OpenAI-compatible backend (Together.ai and the like).

Requests: `/api/chat` and `/api/generate` become `/v1/chat/completions` (options mapped:
temperature, top_p, top_k, seed, stop, num_predict → max_tokens; `format: json` →
`response_format`), `/api/embed` and `/api/embeddings` become `/v1/embeddings`.
Answers come back in Ollama's shape: NDJSON lines from the SSE stream as each delta
arrives, the last one `done` with the token counts; whole JSON for `stream: false`;
`{"error": …}` with the upstream status for errors. Not translated (yet): tool calls,
images.
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
        return [{"role": m.get("role", "user"), "content": m.get("content", "")} for m in body.get("messages") or []]
    messages = [{"role": "system", "content": body["system"]}] if body.get("system") else []
    return [*messages, {"role": "user", "content": body.get("prompt", "")}]


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
    text = (choice.get("message") or {}).get("content") or ""
    return orjson.dumps(_final(path, model, text, choice.get("finish_reason"), document.get("usage"), started))


async def stream(path: str, lines: AsyncIterator[str], model: str, started: float) -> AsyncIterator[bytes]:
    """OpenAI's SSE (`data: {…}` … `data: [DONE]`) as Ollama's NDJSON, delta by delta."""
    finish, usage = None, None
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
            yield orjson.dumps({"error": error_message(data.encode())}) + b"\n"
            return
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            delta = (choice.get("delta") or {}).get("content")
            if delta:
                yield orjson.dumps(_ollama_chunk(path, model, delta, False)) + b"\n"
            finish = choice.get("finish_reason") or finish
    else:
        # The stream ended without [DONE]: an honest error, not a clean end.
        yield orjson.dumps({"error": "the backend ended the answer early"}) + b"\n"
        return
    yield orjson.dumps(_final(path, model, "", finish, usage, started)) + b"\n"
