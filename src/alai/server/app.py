"""`create_app(settings)`: the one place where the control plane is put together."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import anyio.to_thread
import structlog
from fastapi import FastAPI

from alai._version import __version__
from alai.server import deps, modules, problems, ws_direct
from alai.server.db import migrations, pool
from alai.server.direct_routes import DirectRoutes
from alai.server.metrics import Metrics
from alai.server.middleware import RequestMiddleware
from alai.server.ops import service as ops_service
from alai.server.settings import Settings

log = structlog.get_logger("alai.server")


class ControlPlane(FastAPI):
    """FastAPI, with the routes that need none of its machinery answered directly
    (direct_routes.py), behind the same RequestMiddleware."""

    direct: DirectRoutes | None = None
    direct_stack: RequestMiddleware | None = None

    async def __call__(self, scope, receive, send) -> None:
        ws_direct.keep_raw_send(scope, send)
        if self.direct_stack is not None and self.direct.take(scope):
            await self.direct_stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url; `alai serve` fills it in for the embedded database")
    served = modules.select(settings.module_selection)
    conninfo = settings.database_url.get_secret_value()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            applied = await anyio.to_thread.run_sync(lambda: migrations.migrate(conninfo, log=lambda m: log.info(m)))
            if applied:
                log.info("migrations applied", count=len(applied))
        await app.state.pool.open(wait=settings.db_pool_min > 0, timeout=settings.db_connect_timeout)
        try:
            async with contextlib.AsyncExitStack() as stack:
                for module in served:
                    if module.lifespan is not None:
                        await stack.enter_async_context(module.lifespan(app))
                log.info("serving", modules=[m.name for m in served], version=__version__)
                yield
                app.state.draining = True
        finally:
            await app.state.pool.close()

    app = ControlPlane(
        title="alai control plane",
        version=__version__,
        lifespan=lifespan,
        # Served at /v1/openapi.json behind a token instead: every route needs one.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    db_pool = pool.create_pool(
        conninfo, min_size=settings.db_pool_min, max_size=settings.db_pool_max,
        timeout=settings.db_connect_timeout,
    )
    app.state.settings = settings
    app.state.pool = db_pool
    app.state.modules = served
    app.state.known_migrations = migrations.discover()
    app.state.instance_id = uuid.uuid4().hex[:16]
    app.state.started_at = ops_service.utcnow()
    app.state.metrics = Metrics(pool_stats=lambda: db_pool.get_stats() if not db_pool.closed else None)
    app.state.authenticators = []
    # Set when the server starts shutting down: long-lived streams end themselves
    # (clients resume elsewhere) instead of holding the graceful shutdown open.
    app.state.draining = False
    if settings.admin_token is not None:
        app.state.authenticators.append(deps.static_token_authenticator(settings.admin_token.get_secret_value()))

    problems.install(app)
    # Kept for whoever needs each module's routes (the security walk).
    app.state.routers = []
    for module in served:
        if module.router is not None:
            router = module.router()
            app.state.routers.append(router)
            # The routes themselves, not app.include_router: FastAPI keeps an included
            # router as a branch matched again on every request (twice: once to choose
            # the branch, once inside it), about 0.7 ms of the gateway's added latency
            # (bench/gateway_overhead.py). The modules' routers carry no prefix,
            # dependencies or settings of their own beyond what their routes hold.
            app.router.routes.extend(router.routes)
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics)
    if settings.direct_routes:
        app.direct = DirectRoutes(app)
        app.direct_stack = RequestMiddleware(app.direct.dispatch, metrics=app.state.metrics)
    return app
