"""Routes answered directly (server/direct_routes.py) answer exactly as through FastAPI:
the same app built with ALAI_DIRECT_ROUTES off is the reference."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from alai.server.app import ControlPlane, create_app
from alai.server.deps import Principal, api_router, require_scope
from alai.server.direct_routes import DirectRoutes
from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@contextlib.asynccontextmanager
async def client_of(settings):
    app = create_app(settings)

    async def no_scopes(_request, token):
        return Principal(subject="nobody", kind="test", name="nobody") if token == "scopeless" else None

    app.state.authenticators.append(no_scopes)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://alai.test") as http:
            yield app, http


@pytest.fixture
async def apps(settings):
    """(app, client) with direct routes, and without them."""
    async with client_of(settings) as direct, client_of(settings.model_copy(update={"direct_routes": False})) as plain:
        assert direct[0].direct is not None and plain[0].direct is None
        yield direct, plain


@pytest.fixture
def both(apps):
    (_, direct), (_, plain) = apps
    return direct, plain


def comparable(response: httpx.Response) -> tuple:
    body = response.json() if response.content else None
    if isinstance(body, dict):  # the request id differs from request to request
        body.pop("request_id", None)
    return response.status_code, response.headers.get("content-type"), response.headers.get("www-authenticate"), body


CASES = [
    ("POST", "/api/chat", {}, b'{"model": "qwen3.5:27b", "messages": []}'),  # no token
    ("POST", "/api/chat", {"Authorization": "Bearer scopeless"}, b'{"model": "m"}'),  # no gateway:use
    ("POST", "/api/chat", {"Authorization": "Basic abc"}, b"{}"),  # not a bearer token
    ("POST", "/api/chat", AUTH, b"{not json"),
    ("POST", "/api/chat", AUTH, b'{"messages": []}'),  # no model
    ("POST", "/api/chat", AUTH, b'{"model": "no-such-model", "messages": []}'),  # no backend has it
    ("POST", "/api/embed", AUTH, b'["a list"]'),
    ("POST", "/v1/chat/completions", AUTH, b'{"model": 3}'),
    ("POST", "/v1/messages", AUTH, b"{}"),
    ("GET", "/api/tags", AUTH, b""),
    ("GET", "/v1/models", AUTH, b""),
    ("GET", "/api/chat", AUTH, b""),  # no GET route: FastAPI's 405 in both
    ("GET", "/metrics", {}, b""),
]


@pytest.mark.parametrize(("method", "path", "headers", "body"), CASES)
async def test_direct_answers_are_fastapis_answers(both, method, path, headers, body):
    direct, plain = both
    ours = await direct.request(method, path, headers=headers, content=body)
    reference = await plain.request(method, path, headers=headers, content=body)
    if path == "/metrics":  # counts differ; both must be the exposition format
        assert ours.status_code == reference.status_code == 200
        assert ours.headers["content-type"] == reference.headers["content-type"]
        return
    assert comparable(ours) == comparable(reference)
    assert ours.headers.get("x-request-id")


async def test_direct_requests_are_counted_under_their_route_template(both):
    direct, _ = both
    await direct.post("/api/chat", headers=AUTH, content=b'{"model": "no-such-model"}')
    exposition = (await direct.get("/metrics")).text
    assert 'alai_http_requests_total{method="POST",route="/api/chat",status="404"}' in exposition


async def test_which_routes_are_taken_directly(apps):
    table = apps[0][0].direct.table
    assert ("POST", "/api/chat") in table and ("POST", "/v1/chat/completions") in table
    assert ("GET", "/api/chat") not in table
    paths = {path for _, path in table}
    assert not any("{" in path for path in paths)  # path parameters need FastAPI's solver
    assert "/v1/gateway/config" not in paths  # returns a dict: FastAPI serialises it


def test_a_route_that_an_earlier_route_shadows_is_left_to_fastapi():
    app = ControlPlane()
    router = api_router()

    @router.get("/things/{name}", dependencies=[Depends(require_scope("x:read"))])
    async def one(request: Request, name: str) -> JSONResponse:
        return JSONResponse({"by": "parameter"})

    @router.get("/things/special", dependencies=[Depends(require_scope("x:read"))])
    async def special(request: Request) -> JSONResponse:
        return JSONResponse({"by": "static"})

    @router.get("/other", dependencies=[Depends(require_scope("x:read"))])
    async def other(request: Request) -> JSONResponse:
        return JSONResponse({})

    app.router.routes.extend(router.routes)
    table = DirectRoutes(app).table
    assert ("GET", "/things/special") not in table  # FastAPI would answer it with /things/{name}
    assert ("GET", "/other") in table
