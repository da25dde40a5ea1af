"""Health, readiness, metrics and status: what probes, scrapers and `alai status` call."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import psycopg
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import PoolTimeout

from alai._version import __version__
from alai.server.deps import api_router, public, require_scope
from alai.server.logging import redact_url_passwords
from alai.server.ops import service
from alai.server.problems import ProblemError
from alai.wire.ops import DatabaseStatus, ModuleStatus, Readiness, StatusReport

READINESS_TIMEOUT = 2.0


async def _database_status(request: Request) -> DatabaseStatus:
    state = request.app.state
    try:
        async with asyncio.timeout(READINESS_TIMEOUT):
            async with state.pool.connection(timeout=READINESS_TIMEOUT) as conn:
                status = await service.database_status(
                    conn, known=state.known_migrations, embedded=state.settings.embedded_database
                )
    except Exception as error:  # any failure to reach it is the answer, not a crash
        reason = await _why_unreachable(state.settings.database_url.get_secret_value(), error)
        return DatabaseStatus(state="down", detail=f"database not reachable: {reason}",
                              embedded=state.settings.embedded_database)
    stats = state.pool.get_stats()
    status.pool_size = stats.get("pool_size")
    status.pool_available = stats.get("pool_available")
    return status


async def _why_unreachable(conninfo: str, error: Exception) -> str:
    """The pool only says it timed out; one direct attempt tells why (refused, auth …)."""
    if not isinstance(error, (PoolTimeout, TimeoutError)):
        return _first_line(error)
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=2)
    except Exception as direct:
        return redact_url_passwords(_first_line(direct))
    await conn.close()
    return "no pooled connection became available in time (the database answers direct connections)"


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def router_factory() -> APIRouter:
    router = api_router(tags=["ops"])

    @router.get("/healthz", response_model=dict[str, str])
    @public
    async def healthz() -> dict[str, str]:
        """The process is up and serving HTTP (liveness)."""
        return {"status": "ok"}

    @router.get("/readyz", response_model=Readiness, responses={503: {"description": "Not ready; the reasons say why"}})
    @public
    async def readyz(request: Request) -> Readiness:
        """The database answers and its schema is what this build expects (readiness)."""
        database = await _database_status(request)
        reasons = []
        if database.state == "down":
            reasons.append(database.detail or "database not reachable")
        elif database.migrations is not None:
            reasons.extend(service.readiness_reasons(database.migrations))
        if reasons:
            raise ProblemError(503, "; ".join(reasons), slug="not-ready", title="Not ready",
                               reasons=reasons, headers={"Retry-After": "5"})
        return Readiness(ready=True)

    @router.get("/metrics", response_class=Response)
    @public
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/v1/status", response_model=StatusReport, dependencies=[Depends(require_scope("ops:read"))])
    async def status(request: Request) -> StatusReport:
        """Each module's state, the database's, and the replicas alive now."""
        state = request.app.state
        database = await _database_status(request)
        modules: list[ModuleStatus] = []
        for module in state.modules:
            if module.status is None:
                modules.append(ModuleStatus(name=module.name, state="ok"))
                continue
            try:
                modules.append(await module.status(request.app))
            except Exception as error:
                modules.append(ModuleStatus(name=module.name, state="degraded", detail=str(error)))
        instances = []
        if database.state != "down":
            try:
                async with state.pool.connection(timeout=READINESS_TIMEOUT) as conn:
                    instances = await service.live_instances(
                        conn, seen_within=timedelta(seconds=3 * state.settings.instance_heartbeat_seconds)
                    )
            except Exception:
                instances = []
        if database.state == "down":
            overall = "down"
        elif database.state != "ok" or any(m.state not in ("ok", "disabled") for m in modules):
            overall = "degraded"
        else:
            overall = "ok"
        return StatusReport(
            state=overall, version=__version__, instance_id=state.instance_id, database=database,
            modules=modules, instances=instances, generated_at=service.utcnow(),
        )

    @router.get("/v1/openapi.json", include_in_schema=False, dependencies=[Depends(require_scope("ops:read"))])
    async def openapi(request: Request) -> JSONResponse:
        """The OpenAPI description of the routes this process serves."""
        return JSONResponse(request.app.openapi())

    return router
