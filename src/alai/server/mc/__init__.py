"""mc: Mission Control — tasks, comments, history, the live stream, the legacy import."""

import contextlib

from alai.server.background import periodic
from alai.server.mc import routes, stream
from alai.server.modules import Module

SEARCH_INDEX_SECONDS = 2.0
SEARCH_BATCHES_PER_TICK = 40


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

    async def index_search() -> None:
        # What an import left unindexed, in short transactions, a bounded amount per tick.
        from alai.server.mc import service

        for _ in range(SEARCH_BATCHES_PER_TICK):
            async with app.state.pool.connection(timeout=5) as conn:
                if await service.index_pending_search(conn) == 0:
                    return

    async with stream.stream_lifespan(app), periodic("mc-idempotency-prune", 3600, prune), \
            periodic("mc-search-index", SEARCH_INDEX_SECONDS, index_search):
        yield


MODULE = Module(
    name="mc",
    summary="Mission Control tasks",
    depends_on=("identity",),
    router=_router,
    lifespan=_lifespan,
)
