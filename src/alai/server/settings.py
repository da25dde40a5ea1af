"""Server settings, read from `ALAI_*` environment variables.

Built once by whoever starts the process (`alai serve`, the tests) and handed to
`create_app(settings)`; nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator
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
    # Routes that need nothing from FastAPI's machinery answered directly (direct_routes.py);
    # off: every request through FastAPI, for comparison.
    direct_routes: bool = True

    # A static bearer token with every scope, for bootstrapping and scripts.
    admin_token: SecretStr | None = None
    # Written by `alai serve` when it runs its own PostgreSQL and no admin token is set.
    admin_token_file: Path | None = None

    # The URL people and the CLI use to reach this control plane; the built-in
    # issuer's `iss`. Default: http://<host>:<port> (127.0.0.1 for a wildcard host).
    public_url: str | None = None
    access_token_ttl_seconds: int = Field(default=900, ge=30, le=86400)
    refresh_token_ttl_days: int = Field(default=30, ge=1, le=365)
    # How long a replica trusts an API token lookup; revocation takes this long to bite.
    api_token_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    # External OIDC (Azure AD B2C, Entra External ID, Keycloak …). Set the authority
    # (the discovery document lives at <authority>/.well-known/openid-configuration)
    # to verify its tokens instead of running the built-in issuer.
    oidc_authority: str | None = None
    # Expected `iss`; default: the discovery document's issuer.
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    # The CLI's public client id at the external issuer, and the scopes it requests.
    oidc_client_id: str | None = None
    oidc_scopes: str = "openid offline_access"
    # Azure AD B2C user flow / custom policy the tokens must come from (tfp/acr claim).
    oidc_b2c_policy: str | None = None
    oidc_algorithms: str = "RS256"
    # Who may sign in (comma lists, case-insensitive); nobody if both are empty.
    oidc_allowed_emails: str = ""
    oidc_allowed_domains: str = ""
    oidc_admin_emails: str = ""

    # Mission Control's workflow: the statuses in order, and which of them close a task.
    mc_statuses: str = "todo,in_progress,blocked,review,done,cancelled"
    mc_closed_statuses: str = "done,cancelled"

    # HiveMind: under load, a replica reads new messages at most this often, so that
    # many gather into one chunk (one frame per subscriber); an idle topic's first
    # message still goes out at once (bench/hive_latency.py measured the trade-off).
    hive_fanout_gap_ms: float = Field(default=2.0, ge=0, le=1000)
    # How far (messages) a subscriber may fall behind before it is told where to resume
    # and disconnected; and how often retention is applied.
    hive_subscriber_buffer: int = Field(default=5000, ge=10, le=1_000_000)
    hive_prune_seconds: float = Field(default=60.0, gt=0, le=86400)

    # The model gateway's backends and model routes (YAML, see gateway/config.py);
    # unset: no backends (every model request answers 404/503).
    gateway_config: Path | None = None

    # The agent runner. A claimed run's lease lasts this long unless its worker's
    # heartbeat renews it; an expired lease puts the run back in the queue.
    runs_lease_seconds: float = Field(default=30.0, ge=1, le=3600)
    # A node whose last heartbeat is older than this counts as offline: runs that only
    # it could take wait, with that as the reason.
    nodes_offline_seconds: float = Field(default=20.0, ge=1, le=3600)
    # How often each replica looks for expired leases, timeouts and runs to (un)pause.
    runs_sweep_seconds: float = Field(default=1.0, gt=0, le=60)
    # The model of agents that name none (or say `inherit`).
    runs_default_model: str | None = None
    # Where a run linked to a Mission Control task moves it: when its first attempt
    # starts, when it succeeds, when it fails or times out ("" leaves it where it is).
    runs_task_on_start: str = "in_progress"
    runs_task_on_success: str = "done"
    runs_task_on_failure: str = "blocked"
    # Publish every run's state changes on HiveMind (topic runs.<agent>).
    runs_publish_states: bool = True
    # Agent definitions (*.md) loaded (registered or updated) at start-up.
    agents_dir: Path | None = None

    # Secrets: mounted backends, cache and policies (YAML, see secrets/config.py); unset:
    # one local encrypted store. Its key: 32 random bytes, base64 (`alai admin secrets
    # new-key`); unset with the embedded database, one is kept in <data dir>/master-key.
    secrets_config: Path | None = None
    master_key: SecretStr | None = None

    # Skills/rules/agents: the git repository to mirror (a URL or a local path), the
    # token to fetch it with (a value or secret://path), how often to fetch, the shared
    # secret of the git host's webhook, and path globs only `skills:private` may see.
    skills_repo: str | None = None
    skills_token: SecretStr | None = None
    skills_refresh_seconds: float = Field(default=300.0, ge=5, le=86400)
    skills_webhook_secret: SecretStr | None = None
    skills_private: str = ""
    # Where this replica keeps its mirror (default: <data dir>/skills-mirror).
    skills_mirror_dir: Path | None = None

    # How often a replica records that it is alive (shown in /v1/status).
    instance_heartbeat_seconds: float = Field(default=15.0, gt=0)

    @model_validator(mode="after")
    def _external_oidc_needs_an_audience(self) -> Settings:
        # Without an audience check any token of the tenant would do, including ID
        # tokens issued to other applications: refuse to run like that.
        if self.oidc_authority and not self.oidc_audience:
            raise ValueError("ALAI_OIDC_AUDIENCE is required with ALAI_OIDC_AUTHORITY (the API app's id)")
        return self

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


    @property
    def issuer(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def external_oidc(self) -> bool:
        return self.oidc_authority is not None


def comma_list(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(",") if part.strip()]
