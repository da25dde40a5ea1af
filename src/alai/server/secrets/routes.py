"""Secrets over HTTP: values, resolve, mounts, policies, audit (see alai/wire/secrets.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from alai.server.deps import ADMIN_SCOPE, Connection, Principal, actor_name, api_router, require_scope
from alai.server.secrets import service
from alai.wire.secrets import (
    AuditPage,
    Mount,
    Policy,
    PolicyIn,
    ResolveRequest,
    ResolveResponse,
    Secret,
    SecretEntry,
    SecretPut,
)

ADMIN = Depends(require_scope(ADMIN_SCOPE))
STALE_WARNING = '110 - "stale: served from the cache while the backend is down"'


def _secrets(request: Request) -> service.Secrets:
    return request.app.state.secrets


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None




def router_factory():
    router = api_router(prefix="/v1/secrets", tags=["secrets"])

    @router.get("/values", response_model=list[SecretEntry])
    async def list_values(request: Request, prefix: Annotated[str, Query(max_length=300)] = "",
                          principal: Principal = Depends(require_scope("secrets:read"))) -> list[SecretEntry]:
        """Paths under a prefix that the caller may list (never values)."""
        return await _secrets(request).list(principal, prefix, client=_client(request))

    @router.get("/values/{path:path}", response_model=Secret)
    async def read(path: str, request: Request,
                   principal: Principal = Depends(require_scope("secrets:read"))) -> JSONResponse:
        """A secret's value (served stale from the cache, and marked so, while its backend is down)."""
        secret = await _secrets(request).read(principal, path, client=_client(request))
        headers = {"Cache-Control": "no-store"}
        if secret.stale:
            headers["Warning"] = STALE_WARNING
        return JSONResponse(secret.model_dump(mode="json"), headers=headers)

    @router.put("/values/{path:path}", response_model=SecretEntry)
    async def write(path: str, body: SecretPut, request: Request,
                    principal: Principal = Depends(require_scope("secrets:write"))) -> SecretEntry:
        """Creates or replaces a secret's value."""
        return await _secrets(request).write(principal, path, body.value, client=_client(request))

    @router.delete("/values/{path:path}", status_code=204)
    async def delete(path: str, request: Request,
                     principal: Principal = Depends(require_scope("secrets:write"))) -> Response:
        """Deletes a secret."""
        await _secrets(request).delete(principal, path, client=_client(request))
        return Response(status_code=204)

    @router.post("/resolve", response_model=ResolveResponse)
    async def resolve(body: ResolveRequest, request: Request,
                      principal: Principal = Depends(require_scope("secrets:read"))) -> JSONResponse:
        """Several references at once (`secret://a/b`), all or nothing (`alai run`)."""
        answer = await _secrets(request).resolve(principal, body.references, client=_client(request))
        return JSONResponse(answer.model_dump(mode="json"), headers={"Cache-Control": "no-store"})

    @router.get("/mounts", response_model=list[Mount], dependencies=[Depends(require_scope("secrets:read"))])
    async def mounts(request: Request) -> list[Mount]:
        """The mounted backends and whether each answers now."""
        return await _secrets(request).mount_status()

    @router.get("/policies", response_model=list[Policy], dependencies=[ADMIN])
    async def policies(conn: Connection) -> list[Policy]:
        """Who may do what where (default deny)."""
        return await service.list_policies(conn)

    @router.put("/policies/{name}", response_model=Policy)
    async def put_policy(name: str, body: PolicyIn, request: Request, conn: Connection,
                         principal: Principal = Depends(require_scope(ADMIN_SCOPE))) -> Policy:
        """Creates or replaces a policy."""
        saved = await service.put_policy(conn, name=name, body=body, actor=actor_name(principal))
        _secrets(request)._rules_at = -1e9  # this replica sees it at once; others within seconds
        assert saved is not None
        return saved

    @router.delete("/policies/{name}", status_code=204, dependencies=[ADMIN])
    async def delete_policy(name: str, request: Request, conn: Connection) -> Response:
        """Deletes a policy."""
        await service.delete_policy(conn, name=name)
        _secrets(request)._rules_at = -1e9
        return Response(status_code=204)

    @router.get("/audit", response_model=AuditPage, dependencies=[ADMIN])
    async def audit(conn: Connection, path: Annotated[str | None, Query(max_length=300)] = None,
                    principal: Annotated[str | None, Query(max_length=300)] = None,
                    action: Annotated[str | None, Query(max_length=20)] = None,
                    outcome: Annotated[str | None, Query(max_length=20)] = None,
                    since: datetime | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    cursor: Annotated[str | None, Query(max_length=100)] = None) -> AuditPage:
        """Every access, newest first: who, what path, when, from where, the outcome (never a value)."""
        return await service.audit_page(conn, path=path, principal=principal, action=action, outcome=outcome,
                                        since=since, limit=limit, cursor=cursor)

    return router
