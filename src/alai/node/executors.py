"""How a claimed run is executed.

- `ollama_chat`: the agent's system prompt and the run's input as an Ollama
  `/api/chat` request, streamed (NDJSON); against the node's local Ollama, or for a
  cloud worker against the control plane's gateway (same API, with the token).
- `command`: a command line the worker was configured with under a name (agents
  name it, they never carry a command line), in a scratch directory, the input on
  stdin; Claude Code's `--output-format stream-json` lines are understood, other
  output is passed on as text. The whole process group is killed on cancel/timeout.

An executor reports through `emit(kind, data)` and returns an Outcome; it is
cancelled (asyncio) to stop it, and must leave nothing running behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

Emit = Callable[[str, dict[str, Any]], None]
KILL_GRACE_SECONDS = 3.0
STDERR_TAIL = 20


@dataclass
class Outcome:
    outcome: str  # succeeded | failed
    output: str | None = None
    error: str | None = None
    usage: dict[str, Any] | None = None


@dataclass
class RunSpec:
    run_id: int
    attempt: int
    agent: str
    model: str | None
    system_prompt: str
    input: str
    command: str | None
    tools: list[str] = field(default_factory=list)
    token: str | None = None  # the run's own token (reads the secrets its agent lists)
    env: dict[str, str] = field(default_factory=dict)  # NAME: secret://path, for a command
    server: str | None = None


class SecretsUnavailable(Exception):
    pass


async def resolve_env(client: httpx.AsyncClient, spec: RunSpec) -> dict[str, str]:
    """The command's environment variables from secrets, read with the run's token."""
    if not spec.env:
        return {}
    if not spec.token or not spec.server:
        raise SecretsUnavailable("the agent's env names secrets but the run has no token")
    try:
        response = await client.post(f"{spec.server.rstrip('/')}/v1/secrets/resolve",
                                     json={"references": sorted(set(spec.env.values()))},
                                     headers={"Authorization": f"Bearer {spec.token}"}, timeout=30.0)
    except httpx.HTTPError as error:
        raise SecretsUnavailable(f"the control plane did not answer: {type(error).__name__}") from None
    if response.status_code != 200:
        raise SecretsUnavailable(_error_text(response.text))
    values = response.json()["values"]
    return {name: values[reference] for name, reference in spec.env.items()}


async def ollama_chat(client: httpx.AsyncClient, base_url: str, spec: RunSpec, emit: Emit,
                      headers: dict[str, str] | None = None) -> Outcome:
    messages = []
    if spec.system_prompt:
        messages.append({"role": "system", "content": spec.system_prompt})
    messages.append({"role": "user", "content": spec.input})
    body = {"model": spec.model, "messages": messages, "stream": True}
    parts: list[str] = []
    usage: dict[str, Any] | None = None
    try:
        async with client.stream("POST", f"{base_url.rstrip('/')}/api/chat", json=body, headers=headers,
                                 timeout=httpx.Timeout(30.0, read=300.0)) as response:
            if response.status_code >= 400:
                text = (await response.aread()).decode(errors="replace")
                return Outcome("failed", error=f"{base_url} answered {response.status_code}: {_error_text(text)}")
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                chunk = json.loads(line)
                if "error" in chunk:
                    return Outcome("failed", output="".join(parts), error=f"the model stopped: {chunk['error']}")
                message = chunk.get("message") or {}
                if message.get("content"):
                    parts.append(message["content"])
                    emit("output", {"text": message["content"]})
                for call in message.get("tool_calls") or []:
                    emit("tool_call", call.get("function", call))
                if chunk.get("done"):
                    usage = {"prompt_tokens": chunk.get("prompt_eval_count"),
                             "completion_tokens": chunk.get("eval_count"), "model": chunk.get("model")}
                    emit("usage", usage)
    except httpx.HTTPError as error:
        return Outcome("failed", output="".join(parts) or None,
                       error=f"the model at {base_url} did not answer: {type(error).__name__}: {error}")
    except ValueError:
        return Outcome("failed", output="".join(parts) or None, error="the model's answer was not Ollama's NDJSON")
    return Outcome("succeeded", output="".join(parts), usage=usage)


def _error_text(text: str) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        body = json.loads(text)
        return str(body.get("error") or body.get("detail") or text)[:500]
    return text.strip()[:500]


def _stream_json(line: str, emit: Emit, state: dict[str, Any]) -> bool:
    """Claude Code's stream-json lines; False when the line is not one."""
    try:
        item = json.loads(line)
    except ValueError:
        return False
    if not isinstance(item, dict) or "type" not in item:
        return False
    kind = item["type"]
    if kind == "assistant":
        for block in (item.get("message") or {}).get("content") or []:
            if block.get("type") == "text" and block.get("text"):
                emit("output", {"text": block["text"]})
                state["text"].append(block["text"])
            elif block.get("type") == "tool_use":
                emit("tool_call", {"name": block.get("name"), "arguments": block.get("input"), "id": block.get("id")})
    elif kind == "result":
        state["result"] = item.get("result")
        state["failed"] = bool(item.get("is_error"))
        if item.get("usage"):
            state["usage"] = item["usage"]
            emit("usage", item["usage"])
    else:
        emit("log", {"stream": "stdout", "json": item})
    return True


# A stream-JSON line holds a whole message or tool result (a file read, say): far past
# asyncio's default 64 KiB. Longer lines still come through, in pieces (_lines).
LINE_LIMIT = 16 * 1024 * 1024


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """The stream's lines; a line longer than LINE_LIMIT comes in pieces, never an error."""
    while True:
        try:
            yield await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:  # the last line, without its newline
            if end.partial:
                yield end.partial
            return
        except asyncio.LimitOverrunError as error:
            yield await stream.read(max(error.consumed, 1))


async def run_command(command_line: str, spec: RunSpec, emit: Emit, *,
                      extra_env: dict[str, str] | None = None) -> Outcome:
    scratch = tempfile.mkdtemp(prefix=f"alai-run-{spec.run_id}-")
    prompt_file = os.path.join(scratch, ".alai-system-prompt.md")
    with open(prompt_file, "w", encoding="utf-8") as handle:
        handle.write(spec.system_prompt)
    env = dict(os.environ, ALAI_RUN_ID=str(spec.run_id), ALAI_RUN_ATTEMPT=str(spec.attempt), ALAI_AGENT=spec.agent,
               ALAI_MODEL=spec.model or "", ALAI_SYSTEM_PROMPT_FILE=prompt_file)
    env.pop("ALAI_TOKEN", None)  # the worker's credentials are not the command's …
    if spec.token and spec.server:  # … the run's own token is (it reads the agent's secrets only)
        env.update(ALAI_TOKEN=spec.token, ALAI_SERVER=spec.server)
    env.update(extra_env or {})
    process = await asyncio.create_subprocess_exec(
        *shlex.split(command_line), cwd=scratch, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
        limit=LINE_LIMIT)
    state: dict[str, Any] = {"text": [], "result": None, "failed": False, "usage": None}
    stderr_tail: list[str] = []

    async def feed() -> None:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(spec.input.encode())
            await process.stdin.drain()
            process.stdin.close()

    async def read_stdout() -> None:
        assert process.stdout is not None
        async for raw in _lines(process.stdout):
            line = raw.decode(errors="replace")
            if not _stream_json(line.strip(), emit, state):
                emit("output", {"text": line})
                state["text"].append(line)

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for raw in _lines(process.stderr):
            line = raw.decode(errors="replace").rstrip("\n")
            emit("log", {"stream": "stderr", "text": line})
            stderr_tail.append(line)
            del stderr_tail[:-STDERR_TAIL]

    try:
        await asyncio.gather(feed(), read_stdout(), read_stderr())
        code = await process.wait()
    finally:
        if process.returncode is None:
            await _kill_group(process)
        shutil.rmtree(scratch, ignore_errors=True)
    output = state["result"] if state["result"] is not None else "".join(state["text"])
    if code != 0 or state["failed"]:
        detail = f"exit code {code}" if code != 0 else "the command reported an error"
        tail = "; ".join(stderr_tail[-3:])
        return Outcome("failed", output=output, error=f"{detail}{': ' + tail if tail else ''}", usage=state["usage"])
    return Outcome("succeeded", output=output, usage=state["usage"])


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGTERM to the whole group, SIGKILL after a grace period: children die too."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(asyncio.shield(process.wait()), KILL_GRACE_SECONDS)
            break
        except TimeoutError:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers that left the leader behind
