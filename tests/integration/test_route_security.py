"""Every route of the app needs a token and declares a scope, except the public ones."""

import httpx
import pytest
from fastapi.routing import APIRoute

from alai.server.deps import PUBLIC_PATHS_ATTRIBUTE, Principal

# Health, readiness, metrics, the OIDC endpoints a client uses before it has a token, and webhooks.
EXPECTED_PUBLIC = {"/healthz", "/readyz", "/metrics", "/.well-known/openid-configuration", "/.well-known/jwks.json",
                   "/.well-known/alai-login", "/oauth/authorize", "/oauth/token", "/oauth/revoke",
                   "/v1/skills/webhook"}  # checked with the git host's shared secret instead
PUBLIC_GETS = {"/healthz", "/readyz", "/metrics", "/.well-known/openid-configuration", "/.well-known/jwks.json",
               "/.well-known/alai-login"}


def _routes(app):
    routes = [route for router in app.state.routers for route in router.routes if isinstance(route, APIRoute)]
    assert routes, "no routes found to check"
    return routes


def _scope_of(route: APIRoute) -> str | None:
    declared = getattr(route, "alai_scopes", ())
    if declared:
        return declared[0]
    for dependency in route.dependant.dependencies:
        scope = getattr(dependency.call, "alai_scope", None)
        if scope:
            return scope
    return None


def _sample_path(route: APIRoute) -> str:
    path = route.path
    for name in route.param_convertors:
        path = path.replace("{" + name + "}", "sample")
    return path


def test_every_route_is_public_or_declares_a_scope(app):
    public = {r.path for r in _routes(app) if getattr(r.endpoint, PUBLIC_PATHS_ATTRIBUTE, False)}
    assert public == EXPECTED_PUBLIC
    missing = [r.path for r in _routes(app) if r.path not in public and _scope_of(r) is None]
    assert missing == []


async def test_every_private_route_answers_401_without_and_403_with_the_wrong_scope(app):
    async def no_scopes(_request, token):
        return Principal(subject="nobody", kind="test", name="nobody") if token == "scopeless" else None

    app.state.authenticators.append(no_scopes)
    checked = 0
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        for route in _routes(app):
            if route.path in EXPECTED_PUBLIC:
                continue
            for method in route.methods - {"HEAD"}:
                url = _sample_path(route)
                anonymous = await http.request(method, url)
                assert anonymous.status_code == 401, f"{method} {route.path}: {anonymous.status_code}"
                wrong = await http.request(method, url, headers={"Authorization": "Bearer scopeless"})
                assert wrong.status_code == 403, f"{method} {route.path}: {wrong.status_code}"
                checked += 1
    assert checked >= 1


@pytest.mark.parametrize("path", sorted(PUBLIC_GETS))
async def test_public_routes_answer_without_a_token(anonymous_client, path):
    response = await anonymous_client.get(path)
    assert response.status_code == 200


def test_every_websocket_route_declares_its_scope(app):
    from fastapi.routing import APIWebSocketRoute

    sockets = [route for router in app.state.routers for route in router.routes
               if isinstance(route, APIWebSocketRoute)]
    assert sockets, "expected the Mission Control stream"
    assert [r.path for r in sockets if not getattr(r.endpoint, "alai_scope", None)] == []
