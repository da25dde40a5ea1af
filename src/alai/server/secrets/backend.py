"""The interface every secret backend implements, and its errors.

A backend serves the paths under its mount prefix; it receives paths relative to it.
Errors: `NotFound` (→ 404), `Ambiguous` (→ 409: a name that matches several items;
never guess), `ReadOnly` (→ 405), `BackendDown` (→ 503, or a stale cached value:
the backend cannot be reached, is locked or unauthenticated). Messages never hold a
secret value.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class BackendError(Exception):
    """Base: str(error) is one line for people, without any secret value."""


class NotFound(BackendError):
    pass


class Ambiguous(BackendError):
    pass


class ReadOnly(BackendError):
    pass


class BackendDown(BackendError):
    pass


@dataclass(frozen=True)
class Listed:
    path: str  # relative to the mount
    updated_at: datetime | None = None


class SecretBackend(Protocol):
    kind: str
    read_only: bool

    async def get(self, path: str) -> str: ...

    async def put(self, path: str, value: str, *, actor: str) -> None: ...

    async def delete(self, path: str) -> None: ...

    async def list(self, prefix: str) -> list[Listed]: ...

    async def check(self) -> str | None:
        """None when healthy, else why not (one line)."""
        ...

    async def close(self) -> None: ...
