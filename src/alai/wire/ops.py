"""Health, readiness and the status report (the future home of the SPOF report)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

State = Literal["ok", "degraded", "down", "disabled"]


class Readiness(BaseModel):
    ready: bool
    reasons: list[str] = Field(default_factory=list)


class MigrationState(BaseModel):
    applied: int
    pending: list[str] = Field(default_factory=list)
    # Applied in the database but unknown to this build: a newer replica migrated.
    unknown: list[str] = Field(default_factory=list)
    # Applied, but the file changed since: never edit an applied migration.
    changed: list[str] = Field(default_factory=list)


class DatabaseStatus(BaseModel):
    state: State
    detail: str | None = None
    server_version: str | None = None
    embedded: bool = False
    latency_ms: float | None = None
    migrations: MigrationState | None = None
    pool_size: int | None = None
    pool_available: int | None = None


class ModuleStatus(BaseModel):
    name: str
    state: State
    detail: str | None = None


class InstanceInfo(BaseModel):
    """One running server process (replica) that reported itself recently."""

    id: str
    hostname: str
    pid: int
    version: str
    modules: list[str]
    started_at: datetime
    last_seen_at: datetime


class StatusReport(BaseModel):
    state: State
    version: str
    instance_id: str
    database: DatabaseStatus
    modules: list[ModuleStatus]
    instances: list[InstanceInfo] = Field(default_factory=list)
    generated_at: datetime
