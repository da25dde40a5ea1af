"""The gateway's configuration: backends, models and their routes (ALAI_GATEWAY_CONFIG, YAML).

    backends:
      - {name: anvil, kind: ollama, url: "http://anvil:11434"}
      - {name: forge, kind: ollama, url: "http://forge.tailnet:11434"}
    models:
      "qwen3.5:27b":
        routes: [{backend: anvil}, {backend: forge, model: "qwen2.5-coder:32b"}]
      "alaiml-task":
        routes: [{backend: anvil}]
        when_down: pause        # fine-tuned: wait for ANVIL, never answer from elsewhere
        retry_after_seconds: 60
    prices:
      - {backend: together, model: "meta-llama/Llama-3.3-70B-Instruct-Turbo", input_per_million: 0.88,
         output_per_million: 0.88}

A model that is not configured is routed to the first healthy backend whose model list
(its /api/tags) has it. API keys may be written as `env:NAME` (read from the
environment) so the file holds no secret; they are never logged or shown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

BackendKind = Literal["ollama", "openai", "anthropic"]


class BackendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    kind: BackendKind
    url: str
    api_key: SecretStr | None = None
    connect_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    # Between two chunks of a streamed answer (a long prompt may take a while to start).
    read_timeout_seconds: float = Field(default=300.0, gt=0, le=3600)
    health_interval_seconds: float = Field(default=5.0, gt=0, le=3600)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("api_key", mode="before")
    @classmethod
    def _from_environment(cls, value: object) -> object:
        if isinstance(value, str) and value.startswith("env:"):
            name = value[4:]
            if name not in os.environ:
                raise ValueError(f"the environment variable {name} is not set")
            return os.environ[name]
        return value


class RouteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str
    model: str | None = None  # the name upstream; default: the name asked for


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    routes: list[RouteConfig] = Field(min_length=1)
    # When no route's backend is up: `fallback` has already tried every route in order
    # (503 if none answered); `pause` answers 503 with Retry-After naming what is down.
    when_down: Literal["fallback", "pause"] = "fallback"
    retry_after_seconds: int = Field(default=30, ge=1, le=3600)


class PriceConfig(BaseModel):
    """US dollars per million tokens for a backend (and one upstream model, or all of them)."""

    model_config = ConfigDict(extra="forbid")

    backend: str
    model: str | None = None
    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backends: list[BackendConfig] = Field(default_factory=list)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    # The first match counts: put model-specific prices before a backend's catch-all.
    prices: list[PriceConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _routes_name_backends(self) -> GatewayConfig:
        names = [backend.name for backend in self.backends]
        if len(set(names)) != len(names):
            raise ValueError("backend names must be unique")
        for model, config in self.models.items():
            for route in config.routes:
                if route.backend not in names:
                    raise ValueError(f"model {model!r} routes to an unknown backend {route.backend!r}")
        for price in self.prices:
            if price.backend not in names:
                raise ValueError(f"a price names an unknown backend {price.backend!r}")
        return self

    def backend(self, name: str) -> BackendConfig:
        return next(backend for backend in self.backends if backend.name == name)


class ConfigError(ValueError):
    """The configuration file cannot be used; the message says why, in one line."""


def load(path: Path | None) -> GatewayConfig:
    """The configuration at `path` (no path: no backends)."""
    if path is None:
        return GatewayConfig()
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ConfigError(f"cannot read the gateway configuration {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise ConfigError(f"the gateway configuration {path} is not valid YAML"
                          + (f" (line {mark.line + 1})" if mark else "")) from None
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"the gateway configuration {path}: {where}: {first['msg']}") from None
