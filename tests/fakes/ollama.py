"""A fake Ollama server speaking Ollama's wire format: NDJSON streams, `stream: false`,
`{"error": …}` bodies with Ollama's status codes, model lists — and, as Ollama does,
the OpenAI API under /v1 (tests/fakes/openai_compat.py, without a key).

Each answer starts with the server's name in brackets ("[anvil] …"), so a test can
tell which backend answered. Run as a process (the gateway's tests kill and restart it):

    python -m tests.fakes.ollama --port 11500 --name anvil --models "qwen3.5:27b,bge-m3:latest" [--delay 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.processes import free_port

VERSION = "0.12.3"
ROOT = Path(__file__).resolve().parents[2]


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def make_app(name: str, models: list[str], delay: float = 0.0) -> Starlette:
    # Streamed answers: begun, sent to their end, or abandoned because the caller went
    # away (GET /_fake/streams), so a test can see that a client's hang-up reached here.
    streams = {"started": 0, "finished": 0, "abandoned": 0}

    def entry(model: str) -> dict:
        family = model.split(":")[0].split("/")[-1]
        return {"name": model, "model": model, "modified_at": "2026-11-01T10:00:00Z", "size": 4_000_000_000,
                "digest": hashlib.sha256(model.encode()).hexdigest(),
                "details": {"parent_model": "", "format": "gguf", "family": family, "families": [family],
                            "parameter_size": "7B", "quantization_level": "Q4_K_M"}}

    def known(model: str) -> str | None:
        for candidate in (model, f"{model}:latest"):
            if candidate in models:
                return candidate
        return None

    async def body_of(request: Request) -> dict | Response:
        raw = await request.body()
        if not raw:
            return JSONResponse({"error": "missing request body"}, status_code=400)
        try:
            body = json.loads(raw)
        except ValueError as error:
            return JSONResponse({"error": f"invalid character: {error}"}, status_code=400)
        model = body.get("model") or body.get("name")
        if not model:
            return JSONResponse({"error": "model is required"}, status_code=400)
        if known(model) is None:
            return JSONResponse({"error": f"model '{model}' not found"}, status_code=404)
        return body

    def words(text: str) -> list[str]:
        parts = f"[{name}] {text}".split(" ")
        return [part + (" " if i < len(parts) - 1 else "") for i, part in enumerate(parts)]

    def stats(prompt_tokens: int, tokens: int) -> dict:
        return {"total_duration": 1_000_000 * (tokens + 1), "load_duration": 100_000,
                "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 200_000, "eval_count": tokens,
                "eval_duration": 800_000 * tokens}

    async def answer(request: Request, kind: str) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        model = body["model"]
        if kind == "chat":
            messages = body.get("messages") or []
            prompt = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        else:
            prompt = body.get("prompt", "")
        pieces = words(f"echo: {prompt}")
        fail_after = 2 if "fail-midway" in prompt else None

        def chunk(text: str, done: bool) -> dict:
            content = {"message": {"role": "assistant", "content": text}} if kind == "chat" else {"response": text}
            out = {"model": model, "created_at": now(), **content, "done": done}
            if done:
                out.update({"done_reason": "stop", **stats(len(prompt.split()), len(pieces))})
                if kind == "generate":
                    out["context"] = [1, 2, 3]
            return out

        if body.get("stream", True) is False:
            await asyncio.sleep(delay * len(pieces))
            return JSONResponse(chunk("".join(pieces), True))

        async def stream():
            streams["started"] += 1
            finished = False
            try:
                for index, piece in enumerate(pieces):
                    if fail_after is not None and index == fail_after:
                        yield json.dumps({"error": "an error was encountered while running the model"}) + "\n"
                        finished = True
                        return
                    yield json.dumps(chunk(piece, False)) + "\n"
                    await asyncio.sleep(delay)
                yield json.dumps(chunk("", True)) + "\n"
                finished = True
            finally:
                streams["finished" if finished else "abandoned"] += 1

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    async def chat(request: Request) -> Response:
        return await answer(request, "chat")

    async def generate(request: Request) -> Response:
        return await answer(request, "generate")

    def vector(text: str) -> list[float]:
        digest = hashlib.sha256(f"{name}:{text}".encode()).digest()
        return [round(byte / 255, 4) for byte in digest[:8]]

    async def embed(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        inputs = body.get("input", "")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        return JSONResponse({"model": body["model"], "embeddings": [vector(text) for text in inputs],
                             "total_duration": 1000, "load_duration": 100, "prompt_eval_count": len(inputs)})

    async def embeddings(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        return JSONResponse({"embedding": vector(body.get("prompt", ""))})

    async def show(request: Request) -> Response:
        body = await body_of(request)
        if isinstance(body, Response):
            return body
        details = entry(known(body["model"]))["details"]
        return JSONResponse({"modelfile": f"# served by {name}\nFROM {body['model']}", "parameters": "",
                             "template": "{{ .Prompt }}", "details": details,
                             "model_info": {"general.architecture": details["family"]},
                             "capabilities": ["completion"], "modified_at": "2026-11-01T10:00:00Z"})

    async def tags(request: Request) -> Response:
        return JSONResponse({"models": [entry(model) for model in models]})

    async def ps(request: Request) -> Response:
        return JSONResponse({"models": [{**entry(models[0]), "expires_at": "2026-11-27T12:00:00Z",
                                         "size_vram": 1000}] if models else []})

    async def version(request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def stream_counts(request: Request) -> Response:
        return JSONResponse(streams)

    # Ollama also serves the OpenAI API under /v1 (no key).
    from tests.fakes import openai_compat

    openai_routes = [route for route in openai_compat.make_app(name, models, None, delay).routes
                     if route.path.startswith("/v1/")]
    return Starlette(routes=[
        *openai_routes,
        Route("/", root, methods=["GET", "HEAD"]), Route("/_fake/streams", stream_counts),
        Route("/api/version", version), Route("/api/tags", tags), Route("/api/ps", ps),
        Route("/api/show", show, methods=["POST"]), Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]), Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embeddings, methods=["POST"]),
    ])


class FakeOllamaProcess:
    """The fake as a process on a free loopback port, to kill and start again."""

    MODULE = "tests.fakes.ollama"

    def __init__(self, name: str, models: list[str], delay: float = 0.0, *, extra: tuple[str, ...] = ()) -> None:
        self.name, self.models, self.delay, self.extra = name, models, delay, extra
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.MODULE, "--port", str(self.port), "--name", self.name,
             "--models", ",".join(self.models), "--delay", str(self.delay), *self.extra], cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/", timeout=0.5)  # any answer: it listens
                return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"fake {self.MODULE} {self.name} did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)



def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    import uvicorn

    app = make_app(args.name, [m for m in args.models.split(",") if m], args.delay)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
