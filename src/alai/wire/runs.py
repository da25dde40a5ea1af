"""Agents, runs, run events and data-plane nodes: the contract between the control
plane, the CLI (`alai agent`, `alai nodes`) and the workers (`alai node`, `alai worker`).

HTTP surface (all JSON; errors are problem+json):

  PUT  /v1/agents/{name}            body: AgentPut (markdown with front matter) → Agent   runs:write
  GET  /v1/agents                   → list[Agent]                                           runs:read
  GET  /v1/agents/{name}[?version=] → Agent                                                 runs:read
  DELETE /v1/agents/{name}          → 204 (runs already made keep their version)            runs:write

  POST /v1/runs                     body: RunCreate, header Idempotency-Key → 201 Run       runs:write
  GET  /v1/runs?agent=&state=&task_id=&limit=&cursor=  → RunPage (newest first)            runs:read
  GET  /v1/runs/{id}                → Run                                                   runs:read
  GET  /v1/runs/{id}/result         → RunResult (409 while not finished)                    runs:read
  GET  /v1/runs/{id}/events?after=&limit= → RunEventPage (oldest first)                     runs:read
  GET  /v1/runs/{id}/stream         SSE: `id: <position>`, `event: <kind>`, `data: RunEvent`; resumes with
                                    Last-Event-ID (or ?after=); ends after the run's final `state` event  runs:read
  WS   /v1/runs/{id}/ws?after=      the same events as JSON text frames, closed (1000) after the final one
  POST /v1/runs/{id}/cancel         → Run (queued/waiting: cancelled now; running: cancel_requested)  runs:write

  Workers (scope `node`; the node's name is bound to the token's principal at registration):
  PUT  /v1/nodes/{name}             body: NodeRegister → Node (register or update capabilities)
  POST /v1/nodes/{name}/heartbeat   body: Heartbeat → HeartbeatReply (renews leases, says what to stop)
  POST /v1/nodes/{name}/claim       body: ClaimRequest → list[Claim] (long-poll up to `wait` seconds)
  POST /v1/runs/{id}/attempts/{attempt}/events   body: EventsIn → 204; 409 if the attempt is not current
  POST /v1/runs/{id}/attempts/{attempt}/complete body: Completion → Run; 409 if the attempt is not current
  POST /v1/runs/{id}/attempts/{attempt}/release  → Run (gives the run back to the queue, attempt not counted)
  GET  /v1/nodes                    → list[Node]                                            runs:read
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

AGENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
NODE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
INPUT_MAX_BYTES = 1024 * 1024
DEFINITION_MAX_BYTES = 256 * 1024
TIMEOUT_MIN_SECONDS, TIMEOUT_MAX_SECONDS = 1, 24 * 3600
DEFAULT_TIMEOUT_SECONDS = 3600
MAX_ATTEMPTS_LIMIT = 10

RunState = Literal["queued", "waiting", "running", "succeeded", "failed", "cancelled", "timed_out"]
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
Executor = Literal["llm", "command"]
EventKind = Literal["state", "output", "tool_call", "usage", "log", "outcome"]


class AgentPut(BaseModel):
    """A definition as Claude Code reads it from ~/.claude/agents/: YAML front matter
    (`name`, `description`, `model`, `tools` …; alai's own: `executor`, `command`,
    `timeout`, `max_attempts`) and the system prompt as body."""

    model_config = ConfigDict(extra="forbid")
    definition: str = Field(min_length=1)


class Agent(BaseModel):
    name: str
    version: int
    description: str | None = None
    model: str | None = None
    tools: list[str] = Field(default_factory=list)
    executor: Executor = "llm"
    command: str | None = None  # for executor "command": a command the worker has configured under this name
    timeout_seconds: int | None = None
    max_attempts: int | None = None
    # Secret paths (globs) the agent's runs may read, and environment variables of a
    # command run set from secrets (NAME: secret://path); both through the run's token.
    secrets: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    front_matter: dict[str, Any] = Field(default_factory=dict)
    system_prompt: str
    definition: str
    updated_at: datetime
    updated_by: str


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agent: str = Field(min_length=1, max_length=64)
    input: str = ""
    model: str | None = Field(default=None, min_length=1, max_length=200)  # overrides the agent's
    task_id: str | None = Field(default=None, max_length=64)  # a Mission Control task: commented and moved
    timeout_seconds: int | None = Field(default=None, ge=TIMEOUT_MIN_SECONDS, le=TIMEOUT_MAX_SECONDS)
    max_attempts: int | None = Field(default=None, ge=1, le=MAX_ATTEMPTS_LIMIT)
    priority: int = Field(default=0, ge=-100, le=100)  # higher first


class Run(BaseModel):
    id: int
    agent: str
    agent_version: int
    model: str | None = None
    executor: Executor
    requires: list[str]  # capabilities a worker must advertise, e.g. ["model:alaiml-task"]
    task_id: str | None = None
    state: RunState
    reason: str | None = None  # why it waits, or why it failed
    priority: int
    timeout_seconds: int
    max_attempts: int
    attempt: int  # the current (or last) attempt; 0 before the first claim
    node: str | None = None
    cancel_requested: bool = False
    lease_expires_at: datetime | None = None
    created_by: str
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime


class RunPage(BaseModel):
    items: list[Run]
    next_cursor: str | None = None


class RunResult(BaseModel):
    id: int
    state: RunState
    output: str | None = None
    error: str | None = None
    usage: dict[str, Any] | None = None
    attempt: int


class RunEvent(BaseModel):
    id: int
    position: str  # "<tx>-<id>": the resume point (Last-Event-ID)
    run_id: int
    attempt: int
    kind: EventKind
    data: dict[str, Any]
    at: datetime


class RunEventPage(BaseModel):
    items: list[RunEvent]
    next_after: str | None = None


# -- workers -------------------------------------------------------------------------------

class NodeRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["node", "worker"] = "node"
    # e.g. "model:qwen3.5:27b", "executor:llm", "executor:command", "command:claude"
    capabilities: list[str] = Field(default_factory=list, max_length=2000)
    max_concurrency: int = Field(default=4, ge=1, le=1000)
    version: str | None = Field(default=None, max_length=64)
    hostname: str | None = Field(default=None, max_length=255)


class Node(BaseModel):
    name: str
    kind: str
    principal: str
    capabilities: list[str]
    models: list[str]
    max_concurrency: int
    online: bool
    last_heartbeat_at: datetime
    registered_at: datetime
    version: str | None = None
    hostname: str | None = None
    running: list[int] = Field(default_factory=list)  # run ids held right now


class RunHeld(BaseModel):
    run_id: int
    attempt: int


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    running: list[RunHeld] = Field(default_factory=list, max_length=1000)
    capabilities: list[str] | None = Field(default=None, max_length=2000)  # when they changed


class HeartbeatReply(BaseModel):
    lease_seconds: float
    cancel: list[RunHeld] = Field(default_factory=list)  # stop these (cancelled or timed out)
    lost: list[RunHeld] = Field(default_factory=list)  # no longer yours (lease expired, replaced): stop, write nothing


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    capacity: int = Field(default=1, ge=1, le=100)
    wait: float = Field(default=20.0, ge=0, le=60)


class Claim(BaseModel):
    """A run handed to a worker, with what it needs to execute it."""

    run: Run
    agent: Agent
    input: str
    deadline: datetime  # the timeout, as a moment
    lease_seconds: float
    # The run's own token (until the deadline), when its agent lists secrets: it reads
    # those and nothing else (POST /v1/secrets/resolve). Given to a command as ALAI_TOKEN.
    token: str | None = None


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=0)  # per attempt, from 0: a retried post is stored once
    kind: Literal["output", "tool_call", "usage", "log"]
    data: dict[str, Any]


class EventsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class Completion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Literal["succeeded", "failed", "cancelled", "timed_out"]
    output: str | None = None
    error: str | None = Field(default=None, max_length=10000)
    usage: dict[str, Any] | None = None


COMPLETIONS_MAX = 500  # items in one POST /v1/runs/completions


class CompletionItem(Completion):
    """One attempt's end, in a batch (POST /v1/runs/completions)."""

    run_id: int
    attempt: int = Field(ge=1)


class Completions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[CompletionItem] = Field(min_length=1, max_length=COMPLETIONS_MAX)


class CompletionResult(BaseModel):
    """What POST .../attempts/{attempt}/complete would have answered for this item:
    status 200 with the run, or the problem (404 unknown run, 409 attempt superseded)."""

    run_id: int
    attempt: int
    status: int
    run: Run | None = None
    problem: dict[str, Any] | None = None


class CompletionResults(BaseModel):
    items: list[CompletionResult]  # in the order of the request's items


def model_capability(model: str) -> str:
    """The capability a worker advertises for a model, and a run needs: Ollama's names
    with the implicit tag made explicit (`bge-m3` and `bge-m3:latest` are one model)."""
    name = model.strip()
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"model:{name}"
