"""mc: Mission Control — tasks, comments, history, the live stream, the legacy import."""

import contextlib

from alai.server.background import periodic
from alai.server.mc import routes, stream
from alai.server.modules import Module


def _router():
    from alai.server.mc import import_routes

    router = routes.router_factory()
    import_routes.add_routes(router)
    return router


@contextlib.asynccontextmanager
async def _lifespan(app):
    from alai.server import idempotency

    async def prune() -> None:
        async with app.state.pool.connection(timeout=5) as conn:
            await idempotency.prune(conn, table="mc_idempotency")

    async with stream.stream_lifespan(app), periodic("mc-idempotency-prune", 3600, prune):
        yield


MODULE = Module(
    name="mc",
    summary="Mission Control tasks",
    depends_on=("identity",),
    router=_router,
    lifespan=_lifespan,
)
