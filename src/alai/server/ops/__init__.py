"""ops: health, readiness, metrics and the status report; served by every process."""

from alai.server.modules import Module
from alai.server.ops import lifespan, routes

MODULE = Module(
    name="ops",
    summary="health, readiness, metrics, status",
    router=routes.router_factory,
    lifespan=lifespan.heartbeat,
)
