"""Secrets: values by path from mounted backends, per-identity policies, audit.

HTTP surface (JSON; errors are problem+json; values never appear in errors or logs):

  GET    /v1/secrets/values?prefix=P           → list[SecretEntry]            secrets:read + policy `list`
  GET    /v1/secrets/values/{path}             → Secret                       secrets:read + policy `read`
         (a value served from the cache while its backend is down says so: stale=true, and the
          header `Warning: 110 - "stale"`; past the stale limit: 503 naming the backend and why)
  PUT    /v1/secrets/values/{path}  SecretPut  → SecretEntry                  secrets:write + policy `write`
  DELETE /v1/secrets/values/{path}             → 204                          secrets:write + policy `delete`
  POST   /v1/secrets/resolve  ResolveRequest   → ResolveResponse              secrets:read + policy `read` for each
         (all or nothing: any denied or missing reference → 403/404 naming it, no values)
  GET    /v1/secrets/audit?path=&principal=&action=&outcome=&since=&limit=&cursor= → AuditPage   admin
  GET    /v1/secrets/mounts                     → list[Mount]                  secrets:read
  GET    /v1/secrets/policies                   → list[Policy]                 admin
  PUT    /v1/secrets/policies/{name}  PolicyIn → Policy                       admin
  DELETE /v1/secrets/policies/{name}           → 204                          admin

Paths: segments of [A-Za-z0-9._:-] joined by "/" (not "." or ".."), e.g.
`together/api-key`; a reference elsewhere is `secret://together/api-key`. `mount` in
answers is the prefix of the backend that holds the path ("" for the root mount).
Audit entries name principals as they are named (`admin-token`, a token's or user's
name), with their kind (`user`, `api-token`, `agent`, `static`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from alai.wire.secret_paths import PATH_MAX, PATH_PATTERN, REFERENCE_PREFIX, VALUE_MAX_BYTES  # noqa: F401

Action = Literal["read", "write", "list", "delete"]
Outcome = Literal["ok", "denied", "not_found", "error", "stale"]


class SecretPut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str = Field(min_length=1)


class Secret(BaseModel):
    path: str
    value: str
    mount: str
    stale: bool = False  # served from the cache while the backend is down
    fetched_at: datetime  # when the value was read from its backend


class SecretEntry(BaseModel):
    path: str
    mount: str
    updated_at: datetime | None = None


class ResolveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    references: list[str] = Field(min_length=1, max_length=200)  # "secret://a/b" or "a/b"


class ResolveResponse(BaseModel):
    values: dict[str, str]  # reference as given → value
    stale: list[str] = Field(default_factory=list)


class Mount(BaseModel):
    prefix: str  # "" = the root mount
    kind: Literal["local", "bws", "bw"]
    read_only: bool = False
    healthy: bool | None = None
    detail: str | None = None


class PolicyIn(BaseModel):
    """Who may do what where. `principals`: `user:alice` (a user's name or id), `user:*`,
    `token:NAME` (an API token), `node:*`, `agent:NAME`, `*`. `paths`: globs
    (`together/*`, `agents/tasker/**`). Default deny; admins may do everything."""

    model_config = ConfigDict(extra="forbid")
    principals: list[str] = Field(min_length=1, max_length=100)
    actions: list[Action] = Field(min_length=1)
    paths: list[str] = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)


class Policy(PolicyIn):
    name: str
    updated_at: datetime
    updated_by: str


class AuditEntry(BaseModel):
    id: int
    at: datetime
    principal: str
    principal_kind: str
    action: str  # read | write | delete | list | resolve
    path: str
    outcome: Outcome
    mount: str | None = None
    client: str | None = None  # the caller's address
    detail: str | None = None  # why denied / what failed — never a value


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None = None
