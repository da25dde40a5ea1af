"""Server settings, read from `ALAI_*` environment variables.

Built once by whoever starts the process (`alai serve`, the tests) and handed to
`create_app(settings)`; nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8420


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("alai", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALAI_", extra="ignore")

    # PostgreSQL to use. Unset: `alai serve` runs a private one in `data_dir`.
    database_url: SecretStr | None = None
    data_dir: Path = Field(default_factory=default_data_dir)
    # Set by `alai serve` when database_url points at the PostgreSQL it runs itself.
    embedded_database: bool = False

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    # Which modules this process serves: "all", or a comma list ("mc,hive").
    # Ops endpoints are always served: every replica needs its probes.
    modules: str = "all"

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # "auto": readable lines on a terminal, JSON otherwise (containers, files).
    log_format: Literal["auto", "json", "console"] = "auto"

    db_pool_min: int = Field(default=1, ge=0)
    db_pool_max: int = Field(default=10, ge=1)
    db_connect_timeout: float = Field(default=10.0, gt=0)
    # Production may prefer running `alai admin migrate` as a release step.
    migrate_on_start: bool = True

    # A static bearer token with every scope, for bootstrapping and scripts.
    admin_token: SecretStr | None = None
    # Written by `alai serve` when it runs its own PostgreSQL and no admin token is set.
    admin_token_file: Path | None = None

    # How often a replica records that it is alive (shown in /v1/status).
    instance_heartbeat_seconds: float = Field(default=15.0, gt=0)

    @field_validator("modules")
    @classmethod
    def _normalise_modules(cls, value: str) -> str:
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        return ",".join(names) or "all"

    @property
    def module_selection(self) -> list[str] | None:
        """The module names asked for, or None for all."""
        if self.modules == "all":
            return None
        return self.modules.split(",")

