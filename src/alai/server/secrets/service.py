"""Secrets: mounts, the cache, policies and the audit, in front of the backends.

- A path goes to the mount with the longest matching prefix (`vault/github` → the
  `vault` mount, as `github`); the root mount ("") takes the rest.
- Reads are cached per replica for `cache_ttl_seconds`. When a backend is down, a
  cached value is served marked stale for up to `stale_max_seconds`, then 503 with
  the backend's reason: agents that already had a value keep working through a short
  outage, and everyone can see they are on borrowed time.
- The policy is decided before a backend is asked, so a denial does not reveal
  whether a path exists.
- Every read, write, delete, list, denial and backend error is audited (who, what,
  when, from where, the outcome) — never a value.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool

from alai.server import cursors
from alai.server.deps import Principal, actor_name
from alai.server.problems import ProblemError
from alai.server.secrets import policy
from alai.server.secrets.backend import Ambiguous, BackendDown, BackendError, NotFound, ReadOnly, SecretBackend
from alai.wire.secrets import (
    PATH_MAX,
    PATH_PATTERN,
    REFERENCE_PREFIX,
    VALUE_MAX_BYTES,
    AuditEntry,
    AuditPage,
    Mount,
    Policy,
    PolicyIn,
    ResolveResponse,
    Secret,
    SecretEntry,
)

log = structlog.get_logger("alai.secrets")
_PATH = re.compile(PATH_PATTERN)
POLICY_CACHE_SECONDS = 2.0


def check_path(text: str) -> str:
    path = text.removeprefix(REFERENCE_PREFIX).strip("/")
    if len(path) > PATH_MAX or not _PATH.match(path) or any(part in (".", "..") for part in path.split("/")):
        raise ProblemError(422, f"{text[:100]!r} is not a secret path: segments of letters, digits, . _ - "
                                "joined by / (together/api-key)", slug="bad-secret-path")
    return path


@dataclass
class _Cached:
    value: str
    fetched_at: datetime
    fetched_mono: float


@dataclass(eq=False)
class MountedBackend:
    prefix: str
    backend: SecretBackend

    def relative(self, path: str) -> str:
        return path[len(self.prefix) + 1:] if self.prefix else path

    def absolute(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative


@dataclass(eq=False)
class Secrets:
    pool: AsyncConnectionPool
    mounts: list[MountedBackend]
    cache_ttl: float
    stale_max: float
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _rules: list[policy.Rule] = field(default_factory=list)
    _rules_at: float = -1e9

    # -- plumbing -------------------------------------------------------------------------

    def mount_for(self, path: str) -> MountedBackend:
        best = None
        for mounted in self.mounts:
            if mounted.prefix == "" or path == mounted.prefix or path.startswith(mounted.prefix + "/"):
                if best is None or len(mounted.prefix) > len(best.prefix):
                    best = mounted
        if best is None:
            raise ProblemError(404, f"no secrets backend is mounted for {path}", slug="secret-not-found")
        return best

    async def rules(self) -> list[policy.Rule]:
        if time.monotonic() - self._rules_at > POLICY_CACHE_SECONDS:
            async with self.pool.connection() as conn:
                rows = await (await conn.execute(
                    "SELECT name, principals, actions, paths FROM secret_policies ORDER BY name")).fetchall()
            self._rules = [policy.Rule(row["name"], tuple(row["principals"]), frozenset(row["actions"]),
                                       tuple(row["paths"])) for row in rows]
            self._rules_at = time.monotonic()
        return self._rules

    async def audit(self, principal: Principal, action: str, path: str, outcome: str, *,
                    mount: str | None = None, client: str | None = None, detail: str | None = None) -> None:
        try:
            async with self.pool.connection() as conn:
                await conn.execute(
                    "INSERT INTO secret_audit (principal, principal_kind, action, path, outcome, mount, client, detail) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (actor_name(principal), principal.kind, action, path, outcome, mount, client,
                     detail[:500] if detail else None))
        except Exception as error:  # the audit failing is logged loudly, never silently
            log.error("secret audit record not written", path=path, action=action, error=str(error))

    async def _allow(self, principal: Principal, action: str, path: str, client: str | None,
                     audited_as: str | None = None) -> None:
        why = policy.decide(await self.rules(), principal, action, path)
        if why is not None:
            await self.audit(principal, audited_as or action, path, "denied", client=client, detail=why)
            raise ProblemError(403, why, slug="secret-denied")

    @staticmethod
    def _problem(error: BackendError, mounted: MountedBackend, path: str) -> ProblemError:
        where = f"the {mounted.backend.kind} backend" + (f" mounted at {mounted.prefix}/" if mounted.prefix else "")
        if isinstance(error, NotFound):
            return ProblemError(404, f"there is no secret at {path}", slug="secret-not-found")
        if isinstance(error, Ambiguous):
            return ProblemError(409, f"{path} matches more than one item in {where}: {error}", slug="secret-ambiguous")
        if isinstance(error, ReadOnly):
            return ProblemError(405, f"{where} cannot write {path}: {error}", slug="secret-read-only")
        if not isinstance(error, BackendDown):  # the backend understood and refused this value or path
            return ProblemError(422, f"{where} refused {path}: {error}", slug="secret-refused")
        return ProblemError(503, f"{where} is unavailable: {error}", slug="secrets-backend-down",
                            headers={"Retry-After": "30"})

    # -- operations -----------------------------------------------------------------------

    async def read(self, principal: Principal, text: str, *, client: str | None = None,
                   action: str = "read") -> Secret:
        path = check_path(text)
        await self._allow(principal, "read", path, client, audited_as=action)
        mounted = self.mount_for(path)
        cached = self._cache.get(path)
        now = time.monotonic()
        if cached is not None and now - cached.fetched_mono < self.cache_ttl:
            await self.audit(principal, action, path, "ok", mount=mounted.prefix, client=client, detail="cached")
            return Secret(path=path, value=cached.value, mount=mounted.prefix, fetched_at=cached.fetched_at)
        try:
            value = await mounted.backend.get(mounted.relative(path))
        except BackendDown as error:
            if cached is not None and now - cached.fetched_mono < self.stale_max:
                await self.audit(principal, action, path, "stale", mount=mounted.prefix, client=client,
                                 detail=f"backend down: {error}")
                return Secret(path=path, value=cached.value, mount=mounted.prefix, stale=True,
                              fetched_at=cached.fetched_at)
            await self.audit(principal, action, path, "error", mount=mounted.prefix, client=client, detail=str(error))
            raise self._problem(error, mounted, path) from None
        except BackendError as error:
            if isinstance(error, NotFound):
                self._cache.pop(path, None)
            outcome = "not_found" if isinstance(error, NotFound) else "error"
            await self.audit(principal, action, path, outcome, mount=mounted.prefix, client=client, detail=str(error))
            raise self._problem(error, mounted, path) from None
        fetched = _Cached(value=value, fetched_at=datetime.now(UTC), fetched_mono=time.monotonic())
        self._cache[path] = fetched
        await self.audit(principal, action, path, "ok", mount=mounted.prefix, client=client)
        return Secret(path=path, value=value, mount=mounted.prefix, fetched_at=fetched.fetched_at)

    async def write(self, principal: Principal, text: str, value: str, *, client: str | None = None) -> SecretEntry:
        path = check_path(text)
        if len(value.encode()) > VALUE_MAX_BYTES:
            raise ProblemError(413, f"a secret may hold at most {VALUE_MAX_BYTES // 1024} KiB", slug="payload-too-large")
        await self._allow(principal, "write", path, client)
        mounted = self.mount_for(path)
        try:
            if mounted.backend.read_only:
                raise ReadOnly("the mount is read-only")
            await mounted.backend.put(mounted.relative(path), value, actor=actor_name(principal))
        except BackendError as error:
            await self.audit(principal, "write", path, "error", mount=mounted.prefix, client=client, detail=str(error))
            raise self._problem(error, mounted, path) from None
        self._cache[path] = _Cached(value=value, fetched_at=datetime.now(UTC), fetched_mono=time.monotonic())
        await self.audit(principal, "write", path, "ok", mount=mounted.prefix, client=client)
        return SecretEntry(path=path, mount=mounted.prefix, updated_at=datetime.now(UTC))

    async def delete(self, principal: Principal, text: str, *, client: str | None = None) -> None:
        path = check_path(text)
        await self._allow(principal, "delete", path, client)
        mounted = self.mount_for(path)
        try:
            if mounted.backend.read_only:
                raise ReadOnly("the mount is read-only")
            await mounted.backend.delete(mounted.relative(path))
        except BackendError as error:
            outcome = "not_found" if isinstance(error, NotFound) else "error"
            await self.audit(principal, "delete", path, outcome, mount=mounted.prefix, client=client, detail=str(error))
            raise self._problem(error, mounted, path) from None
        self._cache.pop(path, None)
        await self.audit(principal, "delete", path, "ok", mount=mounted.prefix, client=client)

    async def list(self, principal: Principal, prefix: str, *, client: str | None = None) -> list[SecretEntry]:
        wanted = check_path(prefix) if prefix.strip("/") else ""
        rules = await self.rules()
        found: list[SecretEntry] = []
        for mounted in self.mounts:
            if not mounted.prefix:
                inner = wanted
            elif mounted.prefix.startswith(wanted):  # the whole mount lies under the prefix asked for
                inner = ""
            elif wanted.startswith(mounted.prefix + "/"):
                inner = wanted[len(mounted.prefix) + 1:]
            else:
                continue
            try:
                listed = await mounted.backend.list(inner)
            except BackendError as error:
                await self.audit(principal, "list", wanted or "/", "error", mount=mounted.prefix, client=client,
                                 detail=str(error))
                raise self._problem(error, mounted, wanted or "/") from None
            for item in listed:
                path = mounted.absolute(item.path)
                if self.mount_for(path) is not mounted:  # shadowed by a deeper mount
                    continue
                if path.startswith(wanted) and policy.decide(rules, principal, "list", path) is None:
                    found.append(SecretEntry(path=path, mount=mounted.prefix, updated_at=item.updated_at))
        await self.audit(principal, "list", wanted or "/", "ok", client=client, detail=f"{len(found)} paths")
        return sorted(found, key=lambda entry: entry.path)

    async def resolve(self, principal: Principal, references: list[str], *,
                      client: str | None = None) -> ResolveResponse:
        """All or nothing: the first refusal or failure stops it, and no value is returned."""
        values, stale = {}, []
        for reference in references:
            secret = await self.read(principal, reference, client=client, action="resolve")
            values[reference] = secret.value
            if secret.stale:
                stale.append(reference)
        return ResolveResponse(values=values, stale=stale)

    async def system_read(self, text: str) -> str:
        """For other modules (the gateway's API keys): read as the control plane itself."""
        from alai.server.deps import ADMIN_SCOPE

        system = Principal(subject="system", kind="system", scopes=frozenset({ADMIN_SCOPE}), name="control-plane")
        return (await self.read(system, text)).value

    async def mount_status(self) -> list[Mount]:
        out = []
        for mounted in self.mounts:
            try:
                reason = await mounted.backend.check()
            except Exception as error:  # a broken check is a down backend, not a 500
                reason = str(error) or type(error).__name__
            out.append(Mount(prefix=mounted.prefix, kind=mounted.backend.kind, read_only=mounted.backend.read_only,
                             healthy=reason is None, detail=reason))
        return out

    async def close(self) -> None:
        for mounted in self.mounts:
            try:
                await mounted.backend.close()
            except Exception as error:
                log.warning("secrets backend did not close cleanly", mount=mounted.prefix, error=str(error))


# -- policies (SQL) ------------------------------------------------------------------------

POLICY_COLUMNS = "name, principals, actions, paths, description, updated_at, updated_by"


def _policy(row: dict[str, Any]) -> Policy:
    return Policy(**row)


async def list_policies(conn) -> list[Policy]:
    rows = await (await conn.execute(f"SELECT {POLICY_COLUMNS} FROM secret_policies ORDER BY name")).fetchall()
    return [_policy(row) for row in rows]


async def put_policy(conn, *, name: str, body: PolicyIn, actor: str, only_if_new: bool = False) -> Policy | None:
    if not re.match(r"^[A-Za-z0-9._-]{1,100}$", name):
        raise ProblemError(422, f"{name!r} is not a policy name (letters, digits, . _ -)", slug="bad-policy")
    for pattern in body.principals:
        policy.check_principal_pattern(pattern)
    for glob in body.paths:
        policy.check_path_glob(glob)
    conflict = "DO NOTHING" if only_if_new else (
        "DO UPDATE SET principals = excluded.principals, actions = excluded.actions, paths = excluded.paths, "
        "description = excluded.description, updated_at = now(), updated_by = excluded.updated_by")
    row = await (await conn.execute(
        "INSERT INTO secret_policies (name, principals, actions, paths, description, updated_by) "
        f"VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) {conflict} RETURNING {POLICY_COLUMNS}",
        (name, body.principals, sorted(set(body.actions)), body.paths, body.description, actor))).fetchone()
    return _policy(row) if row else None


async def delete_policy(conn, *, name: str) -> None:
    result = await conn.execute("DELETE FROM secret_policies WHERE name = %s", (name,))
    if result.rowcount == 0:
        raise ProblemError(404, f"there is no policy {name!r}", slug="unknown-policy")


async def audit_page(conn, *, path: str | None, principal: str | None, action: str | None, outcome: str | None,
                     since: datetime | None, limit: int, cursor: str | None) -> AuditPage:
    """Audit entries, newest first, filtered; a page of `limit` and the cursor of the next."""
    where, params = [], []
    for column, value in (("path", path), ("principal", principal), ("action", action), ("outcome", outcome)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if since is not None:
        where.append("at >= %s")
        params.append(since)
    if cursor is not None:
        where.append("id < %s")
        params.append(cursors.decode_id(cursor))
    rows = await (await conn.execute(
        "SELECT id, at, principal, principal_kind, action, path, outcome, mount, client, detail FROM secret_audit "
        f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC LIMIT %s",
        [*params, limit + 1])).fetchall()
    items = [AuditEntry(**row) for row in rows[:limit]]
    return AuditPage(items=items, next_cursor=cursors.encode_id(items[-1].id) if len(rows) > limit else None)
