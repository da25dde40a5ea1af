"""Identity: who a caller is, API tokens, and what `alai login` needs to know."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

ADMIN_SCOPE = "admin"
PROFILE_SCOPE = "profile"
# What a signed-in person may do unless an administrator says otherwise.
DEFAULT_USER_SCOPES = (
    PROFILE_SCOPE, "ops:read", "mc:read", "mc:write", "hive:read", "hive:write",
    "runs:read", "runs:write", "gateway:use", "secrets:read", "skills:read",
)
# The client id of the CLI at the built-in issuer (a public client: PKCE, no secret).
CLI_CLIENT_ID = "alai-cli"


class LoginConfig(BaseModel):
    """Where `alai login` should sign in for this control plane (GET /.well-known/alai-login)."""

    mode: Literal["builtin", "external"]
    issuer: str
    discovery_url: str
    client_id: str
    scopes: str
    redirect_host: str = "localhost"
    redirect_path: str = "/callback"


class Me(BaseModel):
    subject: str
    kind: str
    name: str | None = None
    email: str | None = None
    scopes: list[str]
    via: str


class ApiTokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    scopes: list[str] = Field(min_length=1)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiToken(BaseModel):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_by: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class ApiTokenCreated(ApiToken):
    token: str  # shown once; only its hash is stored


class User(BaseModel):
    id: str
    username: str
    email: str | None = None
    display_name: str | None = None
    scopes: list[str]
    external_issuer: str | None = None
    disabled: bool = False
    created_at: datetime
    last_login_at: datetime | None = None
