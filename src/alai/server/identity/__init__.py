"""identity: users, the built-in OIDC issuer, external OIDC tokens, API tokens, scopes."""

from alai.server.identity import lifespan, routes
from alai.server.modules import Module

MODULE = Module(
    name="identity",
    summary="users, OIDC issuer and verification, API tokens",
    router=routes.router_factory,
    lifespan=lifespan.identity_lifespan,
)
