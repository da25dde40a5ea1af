"""A fake OpenAI-compatible server (as Together.ai answers): `/v1/models`,
`/v1/chat/completions` with SSE streaming (`data: {…}` chunks, a usage chunk when
`stream_options.include_usage`, `data: [DONE]`) and `stream: false`, `/v1/embeddings`,
and OpenAI's error shape (`{"error": {"message", "type", "code"}}`) for a bad key or an
unknown model. Answers start with "[name]".

    python -m tests.fakes.openai_compat --port 11600 --name together --models "meta-llama/X" --api-key sk-test
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.ollama import FakeOllamaProcess


def error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}},
                        status_code=status)


def make_app(name: str, models: list[str], api_key: str | None, delay: float = 0.0) -> Starlette:
    """`api_key` None: no key needed (as Ollama's own /v1 routes)."""

    def authorised(request: Request) -> bool:
        return api_key is None or request.headers.get("authorization") == f"Bearer {api_key}"

    async def listed(request: Request) -> Response:
        if not authorised(request):
            return error(401, "Invalid API key provided", "invalid_request_error", "invalid_api_key")
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model", "created": 1700000000,
                                                         "owned_by": name} for m in models]})

    async def checked(request: Request) -> dict | Response:
        if not authorised(request):
            return error(401, "Invalid API key provided", "invalid_request_error", "invalid_api_key")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "Could not parse the JSON body", "invalid_request_error")
        ids = {call.get("id") for m in body.get("messages") or [] for call in m.get("tool_calls") or []}
        for index, message in enumerate(body.get("messages") or []):
            if message.get("role") == "tool" and message.get("tool_call_id") not in ids:
                return error(400, f"Invalid parameter: messages[{index}]: messages with role 'tool' must be a "
                                  "response to a preceding message with 'tool_calls'.", "invalid_request_error")
            if any(not call.get("id") for call in message.get("tool_calls") or []):
                return error(400, f"messages[{index}].tool_calls: each call needs an id", "invalid_request_error")
        if body.get("model") not in models:
            return error(404, f"Unable to access model {body.get('model')}. Please visit "
                              "https://api.together.ai/models to view the list of supported models.",
                         "invalid_request_error", "model_not_found")
        return body

    async def completions(request: Request) -> Response:
        body = await checked(request)
        if isinstance(body, Response):
            return body
        prompt = next((m.get("content", "") for m in reversed(body.get("messages") or []) if m.get("role") == "user"),
                      "")
        words = f"[{name}] echo: {prompt}".split(" ")
        pieces = [word + (" " if i < len(words) - 1 else "") for i, word in enumerate(words)]
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(pieces),
                 "total_tokens": len(prompt.split()) + len(pieces)}
        ident, created = f"chatcmpl-{hashlib.md5(prompt.encode()).hexdigest()[:12]}", int(time.time())
        tools = body.get("tools") or []
        if tools and "weather" in prompt:  # call the first tool, arguments {"city": "Paris"}
            name_of = tools[0]["function"]["name"]
            if not body.get("stream"):
                return JSONResponse({"id": ident, "object": "chat.completion", "created": created,
                                     "model": body["model"], "usage": usage, "choices": [{
                                         "index": 0, "finish_reason": "tool_calls", "message": {
                                             "role": "assistant", "content": None, "tool_calls": [{
                                                 "id": "call_abc", "type": "function", "function": {
                                                     "name": name_of, "arguments": '{"city": "Paris"}'}}]}}]})

            async def tool_stream():
                head = {"index": 0, "id": "call_abc", "type": "function", "function": {"name": name_of,
                                                                                        "arguments": ""}}
                for fragment in ([head] + [{"index": 0, "function": {"arguments": part}}
                                           for part in ('{"ci', 'ty": "Pa', 'ris"}')]):
                    yield "data: " + json.dumps({"id": ident, "object": "chat.completion.chunk", "created": created,
                                                 "model": body["model"], "choices": [{
                                                     "index": 0, "delta": {"tool_calls": [fragment]},
                                                     "finish_reason": None}]}) + "\n\n"
                yield "data: " + json.dumps({"id": ident, "object": "chat.completion.chunk", "created": created,
                                             "model": body["model"], "choices": [{
                                                 "index": 0, "delta": {}, "finish_reason": "tool_calls"}]}) + "\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(tool_stream(), media_type="text/event-stream")
        if not body.get("stream"):
            return JSONResponse({"id": ident, "object": "chat.completion", "created": created, "model": body["model"],
                                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)},
                                              "finish_reason": "stop"}], "usage": usage})

        def event(choices: list, **extra) -> str:
            return "data: " + json.dumps({"id": ident, "object": "chat.completion.chunk", "created": created,
                                          "model": body["model"], "choices": choices, **extra}) + "\n\n"

        async def stream():
            for index, piece in enumerate(pieces):
                delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
                yield event([{"index": 0, "delta": delta, "finish_reason": None}])
                await asyncio.sleep(delay)
            yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
            if (body.get("stream_options") or {}).get("include_usage"):
                yield event([], usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def embeddings(request: Request) -> Response:
        body = await checked(request)
        if isinstance(body, Response):
            return body
        inputs = body.get("input", "")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        data = [{"object": "embedding", "index": i,
                 "embedding": [round(b / 255, 4) for b in hashlib.sha256(f"{name}:{text}".encode()).digest()[:8]]}
                for i, text in enumerate(inputs)]
        return JSONResponse({"object": "list", "data": data, "model": body["model"],
                             "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})

    async def root(request: Request) -> Response:
        return JSONResponse({"message": "not found"}, status_code=404)

    return Starlette(routes=[Route("/", root), Route("/v1/models", listed),
                             Route("/v1/chat/completions", completions, methods=["POST"]),
                             Route("/v1/embeddings", embeddings, methods=["POST"])])


class FakeOpenAIProcess(FakeOllamaProcess):
    MODULE = "tests.fakes.openai_compat"


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
