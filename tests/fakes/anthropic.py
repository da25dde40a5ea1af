"""A fake Anthropic API: `/v1/models`, `/v1/messages` whole or streamed as Anthropic's
SSE events (message_start, content_block_start, content_block_delta…, content_block_stop,
message_delta, message_stop), `x-api-key` checked, Anthropic's error shape
(`{"type": "error", "error": {"type", "message"}}`). Answers start with "[name]".

    python -m tests.fakes.anthropic --port 11700 --name claude --models "claude-sonnet-4-5" --api-key sk-ant-test
"""

from __future__ import annotations

import argparse
import asyncio
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.ollama import FakeOllamaProcess


def error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status_code=status)


def make_app(name: str, models: list[str], api_key: str, delay: float = 0.0) -> Starlette:
    def authorised(request: Request) -> bool:
        return request.headers.get("x-api-key") == api_key and bool(request.headers.get("anthropic-version"))

    async def listed(request: Request) -> Response:
        if not authorised(request):
            return error(401, "authentication_error", "invalid x-api-key")
        return JSONResponse({"data": [{"type": "model", "id": m, "display_name": m,
                                       "created_at": "2026-01-01T00:00:00Z"} for m in models],
                             "has_more": False, "first_id": models[0] if models else None,
                             "last_id": models[-1] if models else None})

    async def messages(request: Request) -> Response:
        if not authorised(request):
            return error(401, "authentication_error", "invalid x-api-key")
        body = json.loads(await request.body())
        if body.get("model") not in models:
            return error(404, "not_found_error", f"model: {body.get('model')}")
        used = {block.get("id") for m in body["messages"] if isinstance(m.get("content"), list)
                for block in m["content"] if block.get("type") == "tool_use"}
        for index, m in enumerate(body["messages"]):
            for block in m.get("content") if isinstance(m.get("content"), list) else []:
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in used:
                    return error(400, "invalid_request_error", f"messages.{index}: unexpected `tool_use_id` found in "
                                                               "`tool_result` blocks")
        last = body["messages"][-1]["content"]
        prompt = last if isinstance(last, str) else "".join(b.get("text", "") for b in last if b.get("type") == "text")
        words = f"[{name}] echo: {prompt}".split(" ")
        pieces = [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words)]
        usage = {"input_tokens": len(prompt.split()), "output_tokens": len(pieces)}
        message = {"id": "msg_fake0123", "type": "message", "role": "assistant", "model": body["model"],
                   "content": [], "stop_reason": None, "stop_sequence": None}
        tools = body.get("tools") or []
        if tools and "weather" in prompt:  # use the first tool with {"city": "Paris"}
            use = {"type": "tool_use", "id": "toolu_fake1", "name": tools[0]["name"], "input": {"city": "Paris"}}
            if not body.get("stream"):
                return JSONResponse({**message, "content": [use], "stop_reason": "tool_use", "usage": usage})

            def tool_event(kind: str, data: dict) -> str:
                return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

            async def tool_stream():
                yield tool_event("message_start", {"message": {**message, "usage": usage}})
                yield tool_event("content_block_start", {"index": 0, "content_block": {**use, "input": {}}})
                for part in ('{"city"', ': "Paris"}'):
                    yield tool_event("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta",
                                                                                    "partial_json": part}})
                yield tool_event("content_block_stop", {"index": 0})
                yield tool_event("message_delta", {"delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                                   "usage": {"output_tokens": 5}})
                yield tool_event("message_stop", {})

            return StreamingResponse(tool_stream(), media_type="text/event-stream")
        if not body.get("stream"):
            return JSONResponse({**message, "content": [{"type": "text", "text": "".join(pieces)}],
                                 "stop_reason": "end_turn", "usage": usage})

        def event(kind: str, data: dict) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        async def stream():
            yield event("message_start", {"message": {**message, "usage": {**usage, "output_tokens": 1}}})
            yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            yield event("ping", {})
            for piece in pieces:
                yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
                await asyncio.sleep(delay)
            yield event("content_block_stop", {"index": 0})
            yield event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                          "usage": {"output_tokens": len(pieces)}})
            yield event("message_stop", {})

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def root(request: Request) -> Response:
        return error(404, "not_found_error", "not found")

    return Starlette(routes=[Route("/", root), Route("/v1/models", listed),
                             Route("/v1/messages", messages, methods=["POST"])])


class FakeAnthropicProcess(FakeOllamaProcess):
    MODULE = "tests.fakes.anthropic"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(make_app(args.name, [m for m in args.models.split(",") if m], args.api_key, args.delay),
                host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
