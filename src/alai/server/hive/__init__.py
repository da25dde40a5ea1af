"""hive: HiveMind — durable pub/sub for agents, subscriptions with resume, shared memory."""

from alai.server.hive import lifespan, routes
from alai.server.modules import Module

MODULE = Module(
    name="hive",
    summary="HiveMind pub/sub and shared memory",
    depends_on=("identity",),
    router=routes.router_factory,
    lifespan=lifespan.hive_lifespan,
)
