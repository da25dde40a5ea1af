"""hive: HiveMind — durable pub/sub for agents, subscriptions with resume, shared memory."""

from alai.server.hive import lifespan, routes
from alai.server.modules import Module


def _router():
    from alai.server.hive import import_routes

    router = routes.router_factory()
    import_routes.add_routes(router)  # POST /import, GET /agents
    return router


MODULE = Module(
    name="hive",
    summary="HiveMind pub/sub and shared memory",
    depends_on=("identity",),
    router=_router,
    lifespan=lifespan.hive_lifespan,
)
