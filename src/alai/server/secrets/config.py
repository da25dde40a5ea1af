"""Which backends are mounted at which path prefixes (`ALAI_SECRETS_CONFIG`, YAML).

    cache_ttl_seconds: 60        # a value read from a backend is served this long without asking again
    stale_max_seconds: 3600      # while its backend is down, a cached value is served (marked stale) this long
    mounts:
      - {prefix: "", kind: local}                       # AES-GCM in PostgreSQL under ALAI_MASTER_KEY
      - prefix: bws                                      # Bitwarden Secrets Manager, through the `bws` CLI
        kind: bws
        access_token: env:BWS_ACCESS_TOKEN               # a machine account's token
        project_id: 6b4c…                                # where new secrets go (optional: read-only without)
        server_url: https://vault.bitwarden.eu           # optional
        binary: bws                                      # optional
      - prefix: vault                                    # the password manager, through `bw serve`
        kind: bw
        client_id: env:BW_CLIENTID                       # API-key login
        client_secret: env:BW_CLIENTSECRET
        password: env:BW_PASSWORD                        # to unlock
        server_url: https://vault.example.com            # optional (self-hosted / EU)
        binary: bw
    policies:                                            # optional: loaded at start-up (API changes win afterwards)
      - {name: people-read, principals: ["user:*"], actions: [read, list], paths: ["**"]}

Without a file: one local mount at the root. `env:NAME` values are read from the
environment at start-up, so no credential needs to be in the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator


class ConfigError(ValueError):
    """One line: what is wrong with the file."""


def _from_env(value: object) -> object:
    if isinstance(value, str) and value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ValueError(f"the environment variable {name} is not set")
        return os.environ[name]
    return value


class MountConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = Field(default="", pattern=r"^([A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*)?$")
    kind: Literal["local", "bws", "bw"]
    read_only: bool = False
    binary: str | None = None  # the CLI to run (bws, bw); default: found on PATH
    server_url: str | None = None
    # bws
    access_token: SecretStr | None = None
    project_id: str | None = None
    # bw
    client_id: SecretStr | None = None
    client_secret: SecretStr | None = None
    password: SecretStr | None = None
    # How long a backend call may take before it counts as down.
    timeout_seconds: float = Field(default=15.0, gt=0, le=300)

    @field_validator("access_token", "client_id", "client_secret", "password", mode="before")
    @classmethod
    def _env(cls, value: object) -> object:
        return _from_env(value)


class PolicyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")
    principals: list[str]
    actions: list[Literal["read", "write", "list", "delete"]]
    paths: list[str]
    description: str | None = None


class SecretsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cache_ttl_seconds: float = Field(default=60.0, ge=0, le=86400)
    stale_max_seconds: float = Field(default=3600.0, ge=0, le=30 * 86400)
    mounts: list[MountConfig] = Field(default_factory=lambda: [MountConfig(prefix="", kind="local")])
    policies: list[PolicyConfig] = Field(default_factory=list)

    @field_validator("mounts")
    @classmethod
    def _unique_prefixes(cls, mounts: list[MountConfig]) -> list[MountConfig]:
        seen = set()
        for mount in mounts:
            if mount.prefix in seen:
                raise ValueError(f"two mounts at the prefix {mount.prefix!r}")
            seen.add(mount.prefix)
        return mounts


def load(path: Path | None) -> SecretsConfig:
    if path is None:
        return SecretsConfig()
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ConfigError(f"cannot read ALAI_SECRETS_CONFIG {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {str(error).splitlines()[0]}") from None
    try:
        return SecretsConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
