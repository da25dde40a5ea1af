"""What the gateway knows about each backend: up or down since when, and its models.

Active checks cost nothing upstream: Ollama `GET /api/tags` (which also lists the
models), OpenAI-compatible `GET /v1/models`, Anthropic `GET /v1/models`. They run
every `health_interval_seconds`, and once a second while a backend is down, so it
comes back by itself soon after it recovers. Passive circuit breaking: a connect
error or timeout on a real request marks the backend down at once; the next request
then goes to the next route without waiting for a timeout again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import structlog

from alai.server.gateway.config import BackendConfig, GatewayConfig

log = structlog.get_logger("alai.gateway")
DOWN_CHECK_SECONDS = 1.0


@dataclass(eq=False)
class BackendState:
    config: BackendConfig
    up: bool | None = None  # None: not checked yet (requests may try it)
    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    reason: str | None = None  # why it is down
    models: list[dict] = field(default_factory=list)  # the last model list it gave (Ollama's /api/tags entries)
    checked_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def usable(self) -> bool:
        return self.up is not False

    def has_model(self, name: str) -> bool:
        wanted = {name, f"{name}:latest"} if ":" not in name else {name}
        return any(entry.get("name") in wanted or entry.get("model") in wanted for entry in self.models)

    def set(self, up: bool, reason: str | None = None) -> None:
        if up != self.up:
            self.since = datetime.now(UTC)
            if up:
                log.info("gateway backend up", backend=self.name)
            else:
                log.warning("gateway backend down", backend=self.name, reason=reason)
        self.up, self.reason = up, (None if up else reason)


def models_in(kind: str, body: object) -> list[dict]:
    """The model list of a health answer: Ollama's `{"models": [...]}`; OpenAI's
    `{"data": [...]}`, or the bare list some compatible services (Together.ai) send."""
    if kind == "ollama":
        entries = body.get("models") if isinstance(body, dict) else None
        return [entry for entry in entries or [] if isinstance(entry, dict)]
    entries = body.get("data") if isinstance(body, dict) else body
    if not isinstance(entries, list):
        raise ValueError("the model list is not a list")
    return [{"name": entry["id"], "model": entry["id"]} for entry in entries
            if isinstance(entry, dict) and isinstance(entry.get("id"), str)]


def redact_url(url: str) -> str:
    """A URL without credentials written into it (https://user:key@host → https://***@host)."""
    scheme, sep, rest = url.partition("://")
    host, at, path = rest.partition("@")
    return f"{scheme}{sep}***@{path}" if at and "/" not in host else url


def headers_for(config: BackendConfig) -> dict[str, str]:
    if config.api_key is None:
        return {}
    key = config.api_key.get_secret_value()
    if config.kind == "anthropic":
        return {"x-api-key": key, "anthropic-version": "2023-06-01"}
    return {"Authorization": f"Bearer {key}"}


def describe(error: BaseException) -> str:
    """A short, secret-free reason for a failed upstream call."""
    if isinstance(error, httpx.TimeoutException):
        return f"timed out ({type(error).__name__})"
    if isinstance(error, httpx.HTTPStatusError):
        if error.response.status_code in (401, 403):
            return f"refused the gateway's credentials (HTTP {error.response.status_code}); check its api_key"
        return f"answered HTTP {error.response.status_code}"
    if isinstance(error, httpx.TransportError):
        return f"unreachable ({type(error).__name__})"
    return type(error).__name__


@dataclass(eq=False)
class Backends:
    config: GatewayConfig
    client: httpx.AsyncClient
    states: dict[str, BackendState] = field(default_factory=dict)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.states = {backend.name: BackendState(backend) for backend in self.config.backends}

    async def start(self) -> None:
        await asyncio.gather(*(self.check(state) for state in self.states.values()))
        self._tasks = [asyncio.create_task(self._watch(state), name=f"gateway-health-{state.name}")
                       for state in self.states.values()]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _watch(self, state: BackendState) -> None:
        while True:
            await asyncio.sleep(state.config.health_interval_seconds if state.up else DOWN_CHECK_SECONDS)
            try:
                await self.check(state)
            except Exception as error:  # never let a watcher die: the backend would never be checked again
                log.warning("gateway health check failed", backend=state.name, error=type(error).__name__)

    async def check(self, state: BackendState) -> None:
        config = state.config
        path = "/api/tags" if config.kind == "ollama" else "/v1/models"
        timeout = httpx.Timeout(5.0, connect=config.connect_timeout_seconds)
        try:
            response = await self.client.get(config.url + path, headers=headers_for(config), timeout=timeout)
            response.raise_for_status()
            state.models = models_in(config.kind, response.json())
        except Exception as error:  # any failure of a health check means down
            state.set(False, describe(error))
        else:
            state.set(True)
        state.checked_at = datetime.now(UTC)

    def mark_down(self, state: BackendState, error: BaseException) -> None:
        """Passive: a real request could not reach it."""
        state.set(False, describe(error))
